-- The embedded backend for the local main job: the same tables and invariants as
-- migrations/mysql, with partial unique indexes in place of generated columns.
-- SQLite's default BINARY collation already compares names exactly.

CREATE TABLE call_room (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_channel_id TEXT NOT NULL DEFAULT '' CHECK (length(source_channel_id) <= 100),
    source_channel_type INTEGER NOT NULL DEFAULT 0,
    creator TEXT NOT NULL CHECK (length(creator) BETWEEN 1 AND 40),
    room_name TEXT NOT NULL CHECK (length(room_name) BETWEEN 1 AND 40),
    call_type INTEGER NOT NULL DEFAULT 1,
    invite_on INTEGER NOT NULL DEFAULT 0,
    max_participants INTEGER NOT NULL DEFAULT 2 CHECK (max_participants >= 2),
    status INTEGER NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 3),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX uq_room_name ON call_room (room_name);
CREATE UNIQUE INDEX uq_live_channel ON call_room (source_channel_type, source_channel_id)
    WHERE status IN (0, 1) AND source_channel_id <> '';
CREATE INDEX ix_room_status_updated ON call_room (status, updated_at);
CREATE INDEX ix_room_creator ON call_room (creator);
CREATE INDEX ix_room_channel ON call_room (source_channel_id);

CREATE TABLE call_participant (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_name TEXT NOT NULL REFERENCES call_room (room_name),
    uid TEXT NOT NULL CHECK (length(uid) BETWEEN 1 AND 40),
    status INTEGER NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 6),
    join_time INTEGER NOT NULL DEFAULT 0,
    leave_time INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX uq_room_uid ON call_participant (room_name, uid);
CREATE UNIQUE INDEX uq_live_uid ON call_participant (uid) WHERE status IN (0, 1);
CREATE INDEX ix_participant_uid ON call_participant (uid);
CREATE INDEX ix_participant_status_updated ON call_participant (status, updated_at);

CREATE TABLE webhook_event (
    id TEXT PRIMARY KEY,
    received_at TEXT NOT NULL
);
CREATE INDEX ix_webhook_received ON webhook_event (received_at);
