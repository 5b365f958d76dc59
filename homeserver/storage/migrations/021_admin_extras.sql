-- Per-user rate-limit exceptions an admin set (0 means unlimited).
CREATE TABLE ratelimit_overrides (
    user_id TEXT NOT NULL PRIMARY KEY,
    messages_per_second DOUBLE PRECISION NOT NULL,
    burst_count BIGINT NOT NULL
);

-- Until when a user may replace their cross-signing keys without re-authenticating
-- (set by an admin for users who lost their password and keys).
CREATE TABLE cross_signing_replacement (
    user_id TEXT NOT NULL PRIMARY KEY,
    until_ts BIGINT NOT NULL
);
