-- Media metadata (the bytes are files under media.store_path), thumbnails, and reports.

CREATE TABLE media (
    media_id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT,
    created_ts BIGINT NOT NULL,
    -- NULL while an asynchronous upload (/create) has not been completed.
    uploaded_ts BIGINT,
    expires_ts BIGINT
);
CREATE INDEX media_by_user ON media (user_id);

CREATE TABLE media_thumbnails (
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (media_id, width, height, method)
);

CREATE TABLE reports (
    id BIGINT NOT NULL PRIMARY KEY,
    reporter TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    target_user_id TEXT,
    reason TEXT,
    score INTEGER,
    received_ts BIGINT NOT NULL
);
