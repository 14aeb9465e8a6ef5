-- Rooms and participants. room_name and uid compare exactly (utf8mb4_bin): "ALICE" is not "alice".
-- The two "live" invariants are unique indexes over generated columns, so races cannot break them:
-- a uid rings or talks in at most one call, and a channel has at most one open room.

CREATE TABLE call_room (
    id BIGINT NOT NULL AUTO_INCREMENT,
    source_channel_id VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    source_channel_type SMALLINT NOT NULL DEFAULT 0,
    creator VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    room_name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    call_type SMALLINT NOT NULL DEFAULT 1,
    invite_on SMALLINT NOT NULL DEFAULT 0,
    max_participants INT NOT NULL DEFAULT 2,
    status SMALLINT NOT NULL DEFAULT 0,
    created_at DATETIME(3) NOT NULL,
    updated_at DATETIME(3) NOT NULL,
    live_channel VARCHAR(110) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
        AS (IF(status IN (0, 1) AND source_channel_id <> '',
               CONCAT(source_channel_type, ':', source_channel_id), NULL)) VIRTUAL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_room_name (room_name),
    UNIQUE KEY uq_live_channel (live_channel),
    KEY ix_room_status_updated (status, updated_at),
    KEY ix_room_creator (creator),
    KEY ix_room_channel (source_channel_id),
    CONSTRAINT ck_room_status CHECK (status BETWEEN 0 AND 3),
    CONSTRAINT ck_room_max CHECK (max_participants >= 2)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE call_participant (
    id BIGINT NOT NULL AUTO_INCREMENT,
    room_name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    uid VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    status SMALLINT NOT NULL DEFAULT 0,
    join_time BIGINT NOT NULL DEFAULT 0,
    leave_time BIGINT NOT NULL DEFAULT 0,
    created_at DATETIME(3) NOT NULL,
    updated_at DATETIME(3) NOT NULL,
    live_uid VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
        AS (IF(status IN (0, 1), uid, NULL)) VIRTUAL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_room_uid (room_name, uid),
    UNIQUE KEY uq_live_uid (live_uid),
    KEY ix_participant_uid (uid),
    KEY ix_participant_status_updated (status, updated_at),
    CONSTRAINT fk_participant_room FOREIGN KEY (room_name) REFERENCES call_room (room_name),
    CONSTRAINT ck_participant_status CHECK (status BETWEEN 0 AND 6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE webhook_event (
    id VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    received_at DATETIME(3) NOT NULL,
    PRIMARY KEY (id),
    KEY ix_webhook_received (received_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
