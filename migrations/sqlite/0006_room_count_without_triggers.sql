-- Room totals without triggers, as migrations/mysql/0006: the store keeps room_count in the
-- transaction that writes the room; older databases drop the triggers 0003 used to create,
-- and the totals are re-derived from the rooms.

DROP TRIGGER IF EXISTS tr_room_count_insert;
DROP TRIGGER IF EXISTS tr_room_count_update;

UPDATE room_count
SET n = (SELECT COUNT(*) FROM call_room r
         WHERE r.status = room_count.status AND r.id % 16 = room_count.shard);
