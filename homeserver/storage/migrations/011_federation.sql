-- Federation: other servers' signing keys, inbound transaction de-duplication, the
-- persisted outbound queue per destination, and events known only as auth or state
-- (outliers: not part of any timeline we serve).

-- Every verify key we learned, with how long it may sign new things. Expired keys stay,
-- to verify old events; expired_ts is set for keys listed under old_verify_keys.
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- The signed key responses as received, served again by our notary endpoint.
CREATE TABLE server_key_responses (
    server_name TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    json TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name)
);

-- Each (origin, transaction ID) is processed once; a retry gets the same answer.
CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_by_time ON federation_inbound_txns (received_ts);

-- What is still to be sent to each destination, in order. PDUs are named by event ID
-- (their JSON is read from the events table when sent); EDUs carry their JSON.
CREATE TABLE federation_outbox (
    id BIGINT NOT NULL PRIMARY KEY,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    room_id TEXT,
    payload TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_outbox_by_destination ON federation_outbox (destination, id);

-- Back-off state per destination: when it last failed and how long to wait.
CREATE TABLE federation_destinations (
    destination TEXT NOT NULL PRIMARY KEY,
    failure_ts BIGINT,
    retry_interval_ms BIGINT NOT NULL DEFAULT 0,
    last_success_ts BIGINT
);

-- Events we hold only as another event's auth or state (from a join's answer, or
-- fetched to fill state): kept byte-exact, never in a timeline.
CREATE TABLE event_outliers (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    json TEXT NOT NULL,
    rejected SMALLINT NOT NULL DEFAULT 0
);
CREATE INDEX event_outliers_by_room ON event_outliers (room_id);

-- The room state a remote server sent with an invite to one of our users, for rooms this
-- server is not in: shown to the invitee as the invite's stripped state.
CREATE TABLE invite_room_state (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    json TEXT NOT NULL
);
