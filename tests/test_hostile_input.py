"""Inputs a client can send that must get a Matrix error, never a 500."""

from __future__ import annotations

from tests.harness import Client, create_room, q

HUGE = "9" * 30


def test_oversized_positions_are_400_not_500(alice: Client) -> None:
    room_id = create_room(alice)
    sent = alice.put(
        f"rooms/{q(room_id)}/send/m.room.message/h1", {"msgtype": "m.text", "body": "x"}
    )
    event_id = sent.body["event_id"]
    for path, params in (
        (f"rooms/{q(room_id)}/messages", {"from": "s" + HUGE}),
        ("sync", {"since": "s" + "_".join([HUGE] * 7)}),
        ("sync", {"filter": HUGE}),
        ("notifications", {"from": HUGE}),
        ("publicRooms", {"since": "o" + HUGE}),
        (f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event", {"ts": HUGE, "dir": "f"}),
        (f"/_matrix/client/v1/rooms/{q(room_id)}/relations/{q(event_id)}", {"from": "s" + HUGE}),
    ):
        resp = alice.get(path, params=params)
        assert resp.status == 400, (path, resp)
        assert resp.body["errcode"] == "M_INVALID_PARAM", (path, resp)
    assert alice.get(f"user/{q(alice.user_id or '')}/filter/{HUGE}").status == 404


def test_malformed_key_objects_are_refused_cleanly(alice: Client) -> None:
    resp = alice.post(
        "keys/device_signing/upload",
        {"master_key": {"user_id": alice.user_id, "usage": ["master"], "keys": ["x"]}},
    )
    assert resp.status == 400, resp
    resp = alice.post(
        "keys/signatures/upload", {alice.user_id: {alice.device_id: {"signatures": "nonsense"}}}
    )
    assert resp.status == 200, resp
    assert alice.device_id in resp.body["failures"][alice.user_id]


def test_search_groupings_of_the_wrong_shape(alice: Client) -> None:
    create_room(alice)
    resp = alice.post(
        "search",
        {"search_categories": {"room_events": {"search_term": "x", "groupings": {"group_by": 3}}}},
    )
    assert resp.status == 200, resp


def test_nul_characters_are_refused_or_kept_never_a_500(alice: Client, bob: Client) -> None:
    """JSON may carry U+0000, and a path %00; PostgreSQL's text holds no NUL character."""
    room_id = create_room(alice)
    json_headers = {"Content-Type": "application/json"}

    def put_raw(path: str, raw: bytes) -> int:
        return alice.request("PUT", path, raw=raw, headers=json_headers).status

    # In an event's content it is kept (the JSON escapes it); search skips it, and a
    # relation to an "event ID" holding one relates to nothing.
    body = put_raw(
        f"rooms/{q(room_id)}/send/m.room.message/nul1",
        b'{"msgtype": "m.text", "body": "nul\\u0000here"}',
    )
    assert body == 200
    relation = put_raw(
        f"rooms/{q(room_id)}/send/m.reaction/nul2",
        b'{"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x\\u0000", "key": "k"}}',
    )
    assert relation == 200
    # Nor does a thread whose root holds one, in a room whose members are notified.
    assert bob.post(f"join/{q(room_id)}", {}).status == 200
    thread = put_raw(
        f"rooms/{q(room_id)}/send/m.room.message/nul4",
        b'{"body": "t", "m.relates_to": {"rel_type": "m.thread", "event_id": "$x\\u0000"}}',
    )
    assert thread == 200
    events = alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "b"}).body["chunk"]
    assert events[3]["content"]["body"] == "nul\x00here"
    # In a path it is refused outright.
    for path in (
        f"rooms/{q(room_id)}/send/m.x%00y/nul3",
        f"rooms/{q(room_id)}/state/m.room.topic/a%00b",
        f"user/{q(alice.user_id or '')}/account_data/a%00b",
        f"rooms/{q(room_id)}/send/m.room.message/nul%00",
    ):
        resp = alice.put(path, {"a": 1})
        assert (resp.status, resp.body["errcode"]) == (400, "M_INVALID_PARAM"), (path, resp)
    # In search, in what is indexed and in a search term, it separates words.
    resp = alice.request(
        "POST",
        "search",
        raw=b'{"search_categories": {"room_events": {"search_term": "nul\\u0000"}}}',
        headers=json_headers,
    )
    assert resp.status == 200, resp
    found = resp.body["search_categories"]["room_events"]["results"]
    assert [r["result"]["content"]["body"] for r in found] == ["nul\x00here"]
    # Elsewhere it is stored where the database can hold it, else refused: never a 500.
    resp = alice.request(
        "PUT",
        f"devices/{q(alice.device_id or '')}",
        raw=b'{"display_name": "a\\u0000b"}',
        headers=json_headers,
    )
    if alice.server.db_kind == "postgres":
        assert (resp.status, resp.body["errcode"]) == (400, "M_INVALID_PARAM"), resp
    else:
        assert resp.status == 200, resp
