-- A room's delivery streams by room_name alone: the event details read them
-- (GET /api/events/{id}), a redelivery ends their backoff, and the event purge deletes them
-- once the room's last event is gone. The primary key leads with the endpoint, so each of
-- those read every stream of the table without this index.
ALTER TABLE event_stream ADD KEY ix_stream_room (room_name);
