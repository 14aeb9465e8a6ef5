-- Calls on record: the same columns, totals and tables as migrations/mysql/0003.

ALTER TABLE call_room ADD COLUMN ring_timeout_seconds INTEGER NOT NULL DEFAULT 60;
ALTER TABLE call_room ADD COLUMN max_duration_seconds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE call_room ADD COLUMN solo_timeout_seconds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE call_room ADD COLUMN end_reason TEXT;
ALTER TABLE call_room ADD COLUMN started_at TEXT;
ALTER TABLE call_room ADD COLUMN ended_at TEXT;
ALTER TABLE call_room ADD COLUMN solo_since TEXT;
ALTER TABLE call_room ADD COLUMN deadline TEXT;
CREATE INDEX ix_room_deadline ON call_room (deadline);
CREATE INDEX ix_room_status_id ON call_room (status, id);

ALTER TABLE call_participant ADD COLUMN reason TEXT;
ALTER TABLE call_participant ADD COLUMN invited_at TEXT;
ALTER TABLE call_participant ADD COLUMN ring_deadline TEXT;
ALTER TABLE call_participant ADD COLUMN ring_seconds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE call_participant ADD COLUMN talk_seconds INTEGER NOT NULL DEFAULT 0;
DROP INDEX ix_participant_uid;
CREATE INDEX ix_participant_uid_id ON call_participant (uid, id);

-- Kept by the store in the transaction that writes the room (no triggers; see 0006).
CREATE TABLE room_count (
    status INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    n INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (status, shard)
);
WITH RECURSIVE shards(shard) AS (SELECT 0 UNION ALL SELECT shard + 1 FROM shards WHERE shard < 15),
     statuses(status) AS (SELECT 0 UNION ALL SELECT status + 1 FROM statuses WHERE status < 3)
INSERT INTO room_count (status, shard, n)
SELECT status, shard,
       (SELECT COUNT(*) FROM call_room r WHERE r.status = statuses.status AND r.id % 16 = shards.shard)
FROM statuses CROSS JOIN shards;

CREATE TABLE livekit_removal (
    room_name TEXT NOT NULL,
    uid TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    PRIMARY KEY (room_name, uid)
);
CREATE INDEX ix_removal_created ON livekit_removal (created_at);
