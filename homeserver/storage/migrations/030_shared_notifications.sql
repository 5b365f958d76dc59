-- Notifications shared by a room: the server's default rules give nearly every member of
-- a room the same answer for an event, so that answer is stored once per event here and
-- counts for every member joined and not yet read past it. A member whose answer differs
-- keeps their own row in event_push_actions: notify = 1 with their actions, or notify = 0
-- where the shared answer does not apply to them. Events before this migration have only
-- member rows (notify = 1), which count exactly as before.
CREATE TABLE event_notifications (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    highlight SMALLINT NOT NULL
);
CREATE INDEX event_notifications_by_room ON event_notifications (room_id, stream_ordering);

ALTER TABLE event_push_actions ADD COLUMN notify SMALLINT NOT NULL DEFAULT 1;
