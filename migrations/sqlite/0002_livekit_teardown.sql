-- See migrations/mysql/0002_livekit_teardown.sql.
CREATE TABLE livekit_teardown (
    room_name TEXT PRIMARY KEY,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX ix_teardown_created ON livekit_teardown (created_at);
