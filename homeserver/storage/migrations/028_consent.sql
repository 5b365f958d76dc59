-- The version of the privacy policy and terms each user accepted, and when; and which
-- versions every user has already been told about.
ALTER TABLE users ADD COLUMN consent_version TEXT;
ALTER TABLE users ADD COLUMN consent_ts BIGINT;
CREATE TABLE consent_notices (
    version TEXT NOT NULL PRIMARY KEY,
    sent_ts BIGINT NOT NULL
);
