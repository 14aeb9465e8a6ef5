-- See migrations/mysql/0005_cache_invalidation.sql.
CREATE TABLE IF NOT EXISTS cache_invalidation (
    room_name TEXT PRIMARY KEY,
    misses INTEGER NOT NULL DEFAULT 1,
    owed_since TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_cache_invalidation_owed ON cache_invalidation (owed_since);
