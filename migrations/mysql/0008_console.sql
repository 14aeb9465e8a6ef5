-- The operator console's overview: calls that ended in a recent window, counted per end_reason
-- (GET /api/overview), read by a range on ended_at.
ALTER TABLE call_room ADD KEY ix_room_ended (ended_at);
