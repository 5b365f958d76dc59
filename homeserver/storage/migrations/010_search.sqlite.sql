-- Full-text search over unencrypted message bodies, names and topics (SQLite FTS5).
CREATE VIRTUAL TABLE event_search USING fts5 (
    event_id UNINDEXED,
    room_id UNINDEXED,
    key UNINDEXED,
    stream_ordering UNINDEXED,
    value
);
