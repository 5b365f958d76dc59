-- Every /sync asks which members of the user's rooms changed, and which memberships of
-- the user changed, within a window of the event stream. Without these the first read
-- the whole room_memberships table (one row per membership event on the server, so a
-- sync cost more every hour the server ran) and the second every row of the user.
CREATE INDEX room_memberships_by_room_stream ON room_memberships (room_id, stream_ordering);
CREATE INDEX room_memberships_by_user_stream ON room_memberships (user_id, stream_ordering);
