-- A transaction ID identifies a retry only together with the request path it was sent on
-- (room, event type, or redacted event), so the key gains a scope.

CREATE TABLE event_transactions (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);
CREATE INDEX event_transactions_by_event ON event_transactions (event_id);
CREATE INDEX event_transactions_by_time ON event_transactions (created_ts);

INSERT INTO event_transactions (user_id, device_id, scope, txn_id, event_id, created_ts)
    SELECT user_id, device_id, '', txn_id, event_id, created_ts FROM event_txn_ids;

DROP TABLE event_txn_ids;
