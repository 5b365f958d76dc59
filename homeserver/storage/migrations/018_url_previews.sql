-- URL previews already made, kept for media.url_preview_cache_time.
CREATE TABLE url_previews (
    url TEXT NOT NULL PRIMARY KEY,
    preview_json TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
