-- See migrations/mysql/0009_event_stream_by_room.sql.
CREATE INDEX IF NOT EXISTS ix_stream_room ON event_stream (room_name);
