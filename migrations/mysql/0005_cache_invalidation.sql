-- Rooms whose cached copy a commit could not drop because Redis was unreachable: written
-- right after such a commit (one row per room, however many commits missed it), replayed by
-- the sweeper as soon as Redis answers again, and deleted then. Empty unless Redis is or was
-- just away; a row lives about as long as the outage plus one sweep.
CREATE TABLE IF NOT EXISTS cache_invalidation (
    room_name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    -- Commits that missed the room since the sweeper last replayed it: the sweeper deletes
    -- the row only if no commit missed it again meanwhile.
    misses INT NOT NULL DEFAULT 1,
    owed_since DATETIME(3) NOT NULL,
    PRIMARY KEY (room_name),
    KEY ix_cache_invalidation_owed (owed_since)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
