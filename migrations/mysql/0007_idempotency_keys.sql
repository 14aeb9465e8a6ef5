-- Idempotency-Key: one row per keyed POST (a client's key, scoped to its caller and route).
-- Inserted in flight by its own committed statement before the work, finished (status and
-- body written) in the same transaction as the change it answers, or deleted again when the
-- request is refused before any change (400, 429, 503). A row lives IDEMPOTENCY_KEY_TTL_SECONDS
-- (24 h by default) after its first request; the sweeper deletes expired rows in batches.
CREATE TABLE IF NOT EXISTS idempotency_key (
    -- SHA-256 (hex) of the caller's role and sub, the route and the key: bounded, and the key
    -- itself (up to 255 characters of the client's choosing) is never stored.
    scope CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- SHA-256 (hex) of the method, route, decoded path and the body's canonical JSON.
    fingerprint CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- The request that holds the row in flight; its seal must name it.
    lease_token CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- In flight until then (past it, a crashed request's row may be taken over); NULL once
    -- the answer is stored.
    lease_until DATETIME(3) NULL,
    status SMALLINT NULL,
    body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    created_at DATETIME(3) NOT NULL,
    expires_at DATETIME(3) NOT NULL,
    PRIMARY KEY (scope),
    -- The sweeper's purge, oldest first.
    KEY ix_idempotency_key_expires (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
