-- The room each user receives server notices in (from the configured system user).
CREATE TABLE server_notice_rooms (
    user_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL
);
-- A notice sent with a transaction ID, per admin: a retry gets the same event, and two
-- admins (or one admin's notices to two users) never share an ID.
CREATE TABLE server_notice_txns (
    admin_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (admin_id, txn_id)
);
