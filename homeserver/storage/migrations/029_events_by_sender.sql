-- A user's latest event in a room (their implicit read position, read for every unread
-- count) without scanning the room's whole history; erasure, export and scheduled
-- deletion find a user's events in a room by it too.
CREATE INDEX events_by_room_sender ON events (room_id, sender, stream_ordering);
