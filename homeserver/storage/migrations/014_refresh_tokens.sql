-- Refresh tokens (for clients that ask for them at login): access tokens of those sessions
-- expire; each refresh token is used once, and stays usable until the pair it was
-- exchanged for has been used (so a response lost on the way costs nothing).
ALTER TABLE access_tokens ADD COLUMN expires_ts BIGINT;
-- The refresh token that minted this access token, until the access token is first used.
ALTER TABLE access_tokens ADD COLUMN minted_by TEXT;

CREATE TABLE refresh_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT,
    -- The refresh token that minted this one, until this one (or its access token) is used.
    minted_by TEXT,
    -- Set once exchanged: the pair it was exchanged for.
    next_refresh TEXT,
    next_access TEXT
);
CREATE INDEX refresh_tokens_by_device ON refresh_tokens (user_id, device_id);
