-- Push rules (a user's own rules and changes to the defaults, as one JSON document),
-- the notifications they produced, and pushers (where to deliver them).

CREATE TABLE push_rules (
    user_id TEXT NOT NULL PRIMARY KEY,
    rules_json TEXT NOT NULL
);

CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    highlight SMALLINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_by_room ON event_push_actions (user_id, room_id, stream_ordering);
CREATE INDEX event_push_actions_by_user ON event_push_actions (user_id, stream_ordering);

CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    pusher_json TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_by_app ON pushers (app_id, pushkey);
