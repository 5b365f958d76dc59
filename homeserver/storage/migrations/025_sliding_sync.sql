-- Simplified sliding sync (MSC4186).
-- A room's bump stamp: the stream position of its latest event of a kind that moves it up
-- a room list (messages, not state changes or reactions).
ALTER TABLE rooms ADD COLUMN bump_stamp BIGINT NOT NULL DEFAULT 0;
UPDATE rooms SET bump_stamp = COALESCE((
    SELECT MAX(e.stream_ordering) FROM events e
    WHERE e.room_id = rooms.room_id AND e.stream_ordering > 0 AND e.rejected = 0
    AND e.type IN ('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker',
                   'm.call.invite', 'm.poll.start', 'm.beacon_info')
), 0);

-- One sync loop of a device (its conn_id), kept in the database so that a restart, or
-- another process, carries it on.
CREATE TABLE sliding_sync_connections (
    connection_key TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    last_pos BIGINT NOT NULL,
    last_used_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX sliding_sync_connections_by_device
    ON sliding_sync_connections (user_id, device_id, conn_id);

-- Each position handed out: the stream positions the answer was built up to.
CREATE TABLE sliding_sync_positions (
    connection_key TEXT NOT NULL,
    pos BIGINT NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (connection_key, pos)
);

-- What a connection has sent of each room, as of a position (the latest row at or before
-- a position holds): up to which event, with which timeline limit and required state.
CREATE TABLE sliding_sync_rooms (
    connection_key TEXT NOT NULL,
    pos BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    sent_stream BIGINT NOT NULL,
    membership_stream BIGINT NOT NULL,
    timeline_limit INTEGER NOT NULL,
    required_state TEXT NOT NULL,
    PRIMARY KEY (connection_key, room_id, pos)
);
