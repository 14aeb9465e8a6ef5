-- Rooms whose LiveKit room must still be deleted: written in the transaction that made the
-- room final, removed once DeleteRoom succeeded; the sweeper retries what is left.
CREATE TABLE livekit_teardown (
    room_name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    created_at DATETIME(3) NOT NULL,
    PRIMARY KEY (room_name),
    KEY ix_teardown_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
