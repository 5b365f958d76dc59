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
