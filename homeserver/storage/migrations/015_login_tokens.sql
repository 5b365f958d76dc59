-- Short-lived, single-use login tokens (signing in a new device from one already signed
-- in, e.g. by QR code). Only the SHA-256 of each token is kept.
CREATE TABLE login_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
