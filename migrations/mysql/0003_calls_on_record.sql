-- Calls on record: per-call limits, why and when a call and each row ended, how long they
-- rang and talked, the next instant a timeout applies, and exact room totals per status.

ALTER TABLE call_room
    ADD COLUMN ring_timeout_seconds INT NOT NULL DEFAULT 60,
    ADD COLUMN max_duration_seconds INT NOT NULL DEFAULT 0,
    ADD COLUMN solo_timeout_seconds INT NOT NULL DEFAULT 0,
    ADD COLUMN end_reason VARCHAR(20) CHARACTER SET ascii NULL,
    ADD COLUMN started_at DATETIME(3) NULL,
    ADD COLUMN ended_at DATETIME(3) NULL,
    -- Since when exactly one row is joined in a running call (the solo timeout's start).
    ADD COLUMN solo_since DATETIME(3) NULL,
    -- The earliest instant a timeout rule applies (an invite's ring deadline, the solo
    -- timeout, the longest duration); NULL when none can. The sweeper reads rooms by it.
    ADD COLUMN deadline DATETIME(3) NULL,
    ADD KEY ix_room_deadline (deadline),
    -- Pages of one status, newest first, without a sort (and the status-only list's cursor).
    ADD KEY ix_room_status_id (status, id);

ALTER TABLE call_participant
    ADD COLUMN reason VARCHAR(20) CHARACTER SET ascii NULL,
    ADD COLUMN invited_at DATETIME(3) NULL,
    ADD COLUMN ring_deadline DATETIME(3) NULL,
    ADD COLUMN ring_seconds INT NOT NULL DEFAULT 0,
    ADD COLUMN talk_seconds INT NOT NULL DEFAULT 0,
    -- A uid's call history, newest first, by keyset.
    ADD KEY ix_participant_uid_id (uid, id),
    DROP KEY ix_participant_uid;

-- Exact room totals per status without a hot row: sixteen shards per status, each room
-- counted in the shard of its id, kept by the store in the transaction that writes the room
-- (no triggers: MySQL 8 with binary logging refuses them without SUPER; see 0006).
CREATE TABLE room_count (
    status SMALLINT NOT NULL,
    shard SMALLINT NOT NULL,
    n BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (status, shard)
) ENGINE = InnoDB;

INSERT INTO room_count (status, shard, n)
SELECT s.status, h.shard, 0
FROM (SELECT 0 AS status UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) s
CROSS JOIN (SELECT 0 AS shard UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3
    UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7
    UNION ALL SELECT 8 UNION ALL SELECT 9 UNION ALL SELECT 10 UNION ALL SELECT 11
    UNION ALL SELECT 12 UNION ALL SELECT 13 UNION ALL SELECT 14 UNION ALL SELECT 15) h;

UPDATE room_count c
JOIN (SELECT status, id % 16 AS shard, COUNT(*) AS n FROM call_room GROUP BY status, id % 16) r
    ON r.status = c.status AND r.shard = c.shard
SET c.n = r.n;

-- Rooms whose LiveKit participant must still be removed (the remove endpoint, or a removed
-- uid LiveKit saw join again); the sweeper retries what is left, like room teardowns.
CREATE TABLE livekit_removal (
    room_name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    uid VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    created_at DATETIME(3) NOT NULL,
    PRIMARY KEY (room_name, uid),
    KEY ix_removal_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
