-- See migrations/mysql/0006_console.sql.
CREATE INDEX IF NOT EXISTS ix_room_ended ON call_room (ended_at);
