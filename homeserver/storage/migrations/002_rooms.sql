-- Rooms as the server-server spec sees them: a DAG of signed events, with the state
-- before and after each event kept as shared snapshots plus deltas.

CREATE TABLE rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    is_public SMALLINT NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL
);

-- The signed JSON exactly as created or received lives in `json`; the other columns are
-- indexes derived from it. Local extras (transaction IDs, redactions) live elsewhere.
CREATE TABLE events (
    stream_ordering BIGINT NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    json TEXT NOT NULL,
    state_before BIGINT NOT NULL,
    state_after BIGINT NOT NULL,
    -- For state events, the event this one replaced (served as unsigned.prev_content).
    replaces_state TEXT,
    rejected SMALLINT NOT NULL DEFAULT 0
);
CREATE INDEX events_by_room ON events (room_id, stream_ordering);
CREATE INDEX events_by_room_ts ON events (room_id, origin_server_ts);
CREATE INDEX events_by_room_type ON events (room_id, type, state_key);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);

CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_id)
);

CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- A state group is a full room state. It is stored as a delta on `prev_group` (or in
-- full when prev_group is NULL); chains are cut short by writing a full snapshot.
CREATE TABLE state_groups (
    id BIGINT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group BIGINT,
    chain_length INTEGER NOT NULL
);

CREATE TABLE state_group_entries (
    group_id BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (group_id, type, state_key)
);

-- The current state of each room: one row per (type, state_key), read in one query.
CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_members ON current_state (state_key, type, membership);

-- Every membership change, for "was this user joined when ..." questions.
CREATE TABLE room_memberships (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    membership TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    forgotten SMALLINT NOT NULL DEFAULT 0
);
CREATE INDEX room_memberships_by_user ON room_memberships (user_id, room_id, stream_ordering);

-- Local extras, merged into served events but never into the signed JSON.
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

CREATE TABLE redactions (
    event_id TEXT NOT NULL,
    redacted_by TEXT NOT NULL,
    PRIMARY KEY (event_id, redacted_by)
);

CREATE TABLE room_aliases (
    alias TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_by_room ON room_aliases (room_id);
