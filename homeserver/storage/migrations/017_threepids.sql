-- E-mail addresses on accounts (third-party IDs), and the validation sessions that prove
-- a user controls one. Personal data: deleted with the account, never shown to others.
CREATE TABLE user_threepids (
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    user_id TEXT NOT NULL,
    validated_ts BIGINT NOT NULL,
    added_ts BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_by_user ON user_threepids (user_id);

CREATE TABLE threepid_validations (
    sid TEXT NOT NULL PRIMARY KEY,
    client_secret TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    purpose TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    send_attempt BIGINT NOT NULL,
    validated_ts BIGINT,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX threepid_validations_by_secret ON threepid_validations (client_secret, address);
