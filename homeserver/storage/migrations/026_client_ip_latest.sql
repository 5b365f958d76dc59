-- One row per session: only its latest address and user agent are kept, no history.
CREATE TABLE client_ips_latest (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    last_seen_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
INSERT INTO client_ips_latest (user_id, device_id, ip, user_agent, last_seen_ts)
SELECT c.user_id, c.device_id, c.ip, c.user_agent, c.last_seen_ts FROM client_ips c
WHERE c.last_seen_ts = (
    SELECT MAX(c2.last_seen_ts) FROM client_ips c2
    WHERE c2.user_id = c.user_id AND c2.device_id = c.device_id
)
ON CONFLICT (user_id, device_id) DO NOTHING;
DROP TABLE client_ips;
ALTER TABLE client_ips_latest RENAME TO client_ips;
CREATE INDEX client_ips_by_last_seen ON client_ips (last_seen_ts);
