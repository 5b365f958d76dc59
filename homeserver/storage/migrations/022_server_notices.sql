-- The room each user receives server notices in (from the configured system user).
CREATE TABLE server_notice_rooms (
    user_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL
);
CREATE TABLE server_notice_txns (
    txn_id TEXT NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL
);
