-- See migrations/mysql/0007_idempotency_keys.sql.
CREATE TABLE IF NOT EXISTS idempotency_key (
    scope TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    lease_token TEXT NOT NULL,
    lease_until TEXT,
    status INTEGER,
    body TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_idempotency_key_expires ON idempotency_key (expires_at);
