-- Business events: the same tables as migrations/mysql/0004.

ALTER TABLE call_room ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;

CREATE TABLE call_event (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    room_name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    endpoints TEXT NOT NULL DEFAULT '',
    owed INTEGER NOT NULL DEFAULT 0,
    due_at TEXT,
    feed_batch INTEGER,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX uq_event_id ON call_event (event_id);
CREATE UNIQUE INDEX uq_event_room_seq ON call_event (room_name, seq);
CREATE INDEX ix_event_due ON call_event (due_at);
CREATE INDEX ix_event_feed ON call_event (feed_batch, id);
CREATE INDEX ix_event_created ON call_event (created_at);

CREATE TABLE event_feed_head (
    id INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL
);
INSERT INTO event_feed_head (id, batch) VALUES (1, 0);

CREATE TABLE event_stream (
    endpoint TEXT NOT NULL,
    room_name TEXT NOT NULL,
    delivered_seq INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    failing_since TEXT,
    next_attempt_at TEXT NOT NULL,
    lease_token TEXT,
    lease_until TEXT,
    PRIMARY KEY (endpoint, room_name)
);

CREATE TABLE event_endpoint (
    endpoint TEXT PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);

CREATE TABLE event_attempt (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    url TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER,
    latency_ms INTEGER NOT NULL,
    error TEXT,
    inline_attempt INTEGER NOT NULL DEFAULT 0,
    attempted_at TEXT NOT NULL
);
CREATE INDEX ix_attempt_event ON event_attempt (event_id, id);
