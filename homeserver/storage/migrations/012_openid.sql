-- OpenID tokens: short-lived proofs of identity a user hands to a third party (widgets,
-- integration managers, Element Call), which checks them with our federation API. Only
-- the SHA-256 of each token is kept.
CREATE TABLE openid_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_by_expiry ON openid_tokens (expires_ts);
