-- Business events: an outbox written in the transaction that changes a call, delivered to the
-- configured endpoints after the commit, and read as a pull feed.

-- The last event number of each room (events are numbered per room from 1, without gaps,
-- under the room's row lock).
ALTER TABLE call_room ADD COLUMN event_seq INT NOT NULL DEFAULT 0;

CREATE TABLE call_event (
    id BIGINT NOT NULL AUTO_INCREMENT,
    event_id VARCHAR(40) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    room_name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    seq INT NOT NULL,
    type VARCHAR(32) CHARACTER SET ascii NOT NULL,
    occurred_at DATETIME(3) NOT NULL,
    -- The whole JSON body as every attempt sends it, so each one is signed over the same bytes.
    payload MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    -- The endpoints (their keys, comma-separated) this event is owed to, fixed when it is
    -- written from the configuration and type filters of that moment, and how many of them
    -- have not finished it (delivered or given up).
    endpoints VARCHAR(1000) CHARACTER SET ascii NOT NULL DEFAULT '',
    owed SMALLINT NOT NULL DEFAULT 0,
    -- When the sweeper should look at this event next; NULL once nothing is owed.
    due_at DATETIME(3) NULL,
    -- The pull feed's position: the batch that made it visible there (NULL until then).
    feed_batch BIGINT NULL,
    created_at DATETIME(3) NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_event_id (event_id),
    UNIQUE KEY uq_event_room_seq (room_name, seq),
    KEY ix_event_due (due_at),
    KEY ix_event_feed (feed_batch, id),
    KEY ix_event_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The feed's batch counter: only feed readers and the sweeper lock it, never a call change.
CREATE TABLE event_feed_head (
    id SMALLINT NOT NULL,
    batch BIGINT NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB;
INSERT INTO event_feed_head (id, batch) VALUES (1, 0);

-- Delivery of one room's events to one endpoint, in order: the last seq finished, the head
-- event's failed attempts and when to try it again, and who is delivering now (a lease).
CREATE TABLE event_stream (
    endpoint VARCHAR(24) CHARACTER SET ascii NOT NULL,
    room_name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    delivered_seq INT NOT NULL DEFAULT 0,
    attempts INT NOT NULL DEFAULT 0,
    failing_since DATETIME(3) NULL,
    next_attempt_at DATETIME(3) NOT NULL,
    lease_token VARCHAR(32) CHARACTER SET ascii NULL,
    lease_until DATETIME(3) NULL,
    PRIMARY KEY (endpoint, room_name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- An endpoint's recent health: after a few failures in a row it gets no attempts inside API
-- requests until a retry by the sweeper succeeds.
CREATE TABLE event_endpoint (
    endpoint VARCHAR(24) CHARACTER SET ascii NOT NULL,
    failures INT NOT NULL DEFAULT 0,
    updated_at DATETIME(3) NOT NULL,
    PRIMARY KEY (endpoint)
) ENGINE = InnoDB;

-- Every attempt, for GET /api/events/{id}.
CREATE TABLE event_attempt (
    id BIGINT NOT NULL AUTO_INCREMENT,
    event_id VARCHAR(40) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    endpoint VARCHAR(24) CHARACTER SET ascii NOT NULL,
    url VARCHAR(1000) CHARACTER SET utf8mb4 NOT NULL,
    attempt INT NOT NULL,
    -- delivered, failed (retried later), gave_up
    outcome VARCHAR(16) CHARACTER SET ascii NOT NULL,
    http_status INT NULL,
    latency_ms INT NOT NULL,
    error VARCHAR(300) CHARACTER SET utf8mb4 NULL,
    inline_attempt SMALLINT NOT NULL DEFAULT 0,
    attempted_at DATETIME(3) NOT NULL,
    PRIMARY KEY (id),
    KEY ix_attempt_event (event_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
