-- Relations between events (threads, edits, references, annotations), from each event's
-- content.m.relates_to, for /relations, /threads and bundled aggregations.

CREATE TABLE event_relations (
    event_id TEXT NOT NULL PRIMARY KEY,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    sender TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX event_relations_by_parent ON event_relations (relates_to_id, rel_type, stream_ordering);
CREATE INDEX event_relations_threads ON event_relations (room_id, rel_type, stream_ordering);
