-- Other servers' media, fetched for our users and kept as files under a local ID (so the
-- thumbnail cache serves them like our own).
CREATE TABLE remote_media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    local_id TEXT NOT NULL UNIQUE,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, media_id)
);
