"""Presence over real HTTP: GET/PUT /presence/{userId}/status, who may see whose presence,
m.presence in /sync, and presence switched off in the config."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from tests.harness import Client, Response, ServerProcess, join, new_user

JsonDict = dict[str, Any]


def q(value: str) -> str:
    return quote(value, safe="")


def create_room(client: Client, **body: Any) -> str:
    resp = client.post("createRoom", body)
    assert resp.status == 200, resp
    return str(resp.body["room_id"])


def share_room(a: Client, b: Client) -> str:
    room_id = create_room(a, preset="public_chat")
    join(b, room_id)
    return room_id


def get_status(client: Client, user_id: str | None) -> Response:
    return client.get(f"presence/{q(str(user_id))}/status")


def put_status(client: Client, user_id: str | None, body: Any) -> Response:
    return client.put(f"presence/{q(str(user_id))}/status", body)


def sync(client: Client, **params: str) -> JsonDict:
    resp = client.get("sync", params=params)
    assert resp.status == 200, resp
    return dict(resp.body)


def presence_of(body: JsonDict, user_id: str | None) -> list[JsonDict]:
    events = body["presence"]["events"]
    for event in events:
        assert event["type"] == "m.presence", event
    return [e for e in events if e["sender"] == user_id]


def sync_until(
    client: Client, since: str, done: Callable[[JsonDict], bool], timeout: float = 5
) -> JsonDict:
    """Incremental syncs from ``since`` until ``done`` holds; the last body either way."""
    deadline = time.monotonic() + timeout
    while True:
        body = sync(client, since=since, timeout="500", set_presence="offline")
        if done(body) or time.monotonic() > deadline:
            return body
        since = body["next_batch"]


def test_set_and_get_own_status(alice: Client) -> None:
    resp = put_status(alice, alice.user_id, {"presence": "unavailable", "status_msg": "lunch"})
    assert resp.status == 200, resp
    resp = get_status(alice, alice.user_id)
    assert resp.status == 200, resp
    assert resp.body["presence"] == "unavailable"
    assert resp.body["status_msg"] == "lunch"
    assert isinstance(resp.body["last_active_ago"], int) and resp.body["last_active_ago"] >= 0
    assert resp.body.get("currently_active", False) is False  # only online users are active
    resp = put_status(alice, alice.user_id, {"presence": "online", "status_msg": "back"})
    assert resp.status == 200, resp
    body = get_status(alice, alice.user_id).body
    assert body["presence"] == "online" and body["status_msg"] == "back"
    assert body["currently_active"] is True
    assert put_status(alice, alice.user_id, {"presence": "offline"}).status == 200
    body = get_status(alice, alice.user_id).body
    assert body["presence"] == "offline"
    assert body.get("currently_active", False) is False


def test_status_visible_to_room_mates_only(
    server: ServerProcess, alice: Client, bob: Client
) -> None:
    carol = new_user(server)
    share_room(alice, bob)
    resp = put_status(alice, alice.user_id, {"presence": "online", "status_msg": "coding"})
    assert resp.status == 200, resp
    resp = get_status(bob, alice.user_id)
    assert resp.status == 200, resp
    assert resp.body["presence"] == "online" and resp.body["status_msg"] == "coding"
    resp = get_status(carol, alice.user_id)
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    invite_only = create_room(alice, preset="private_chat", invite=[carol.user_id])
    join(carol, invite_only)
    resp = get_status(carol, alice.user_id)
    assert resp.status == 200, resp
    assert resp.body["status_msg"] == "coding"
    # ... and after leaving, no more.
    assert carol.post(f"rooms/{q(invite_only)}/leave", {}).status == 200
    assert get_status(carol, alice.user_id).status == 403


def test_cannot_set_someone_elses_status(alice: Client, bob: Client) -> None:
    share_room(alice, bob)
    assert (
        put_status(alice, alice.user_id, {"presence": "online", "status_msg": "mine"}).status == 200
    )
    resp = put_status(bob, alice.user_id, {"presence": "offline", "status_msg": "hacked"})
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    body = get_status(alice, alice.user_id).body
    assert body["presence"] == "online" and body["status_msg"] == "mine"


def test_invalid_presence(alice: Client) -> None:
    assert (
        put_status(alice, alice.user_id, {"presence": "online", "status_msg": "ok"}).status == 200
    )
    for body in (
        {"presence": "busy"},
        {"presence": "ONLINE"},
        {"presence": 1},
        {"status_msg": "no presence"},
        {"presence": "online", "status_msg": 5},
        {"presence": "online", "status_msg": "x" * 5000},
    ):
        resp = put_status(alice, alice.user_id, body)
        assert resp.status == 400, (body, resp)
    body = get_status(alice, alice.user_id).body
    assert body["presence"] == "online" and body["status_msg"] == "ok"
    assert alice.get("sync", params={"set_presence": "busy"}).status == 400
    assert alice.get(f"presence/{q(str(alice.user_id))}/status", token=False).status == 401


def test_presence_in_sync_for_room_mates(server: ServerProcess, alice: Client, bob: Client) -> None:
    carol = new_user(server)
    share_room(alice, bob)
    bob_since = sync(bob, set_presence="offline")["next_batch"]
    carol_since = sync(carol, set_presence="offline")["next_batch"]
    resp = put_status(alice, alice.user_id, {"presence": "unavailable", "status_msg": "brb"})
    assert resp.status == 200, resp
    body = sync_until(bob, bob_since, lambda b: bool(presence_of(b, alice.user_id)))
    events = presence_of(body, alice.user_id)
    assert events, body["presence"]
    content = events[-1]["content"]
    assert content["presence"] == "unavailable"
    assert content["status_msg"] == "brb"
    assert isinstance(content["last_active_ago"], int)
    # Not to someone who shares no room.
    body = sync(carol, since=carol_since, set_presence="offline")
    assert presence_of(body, alice.user_id) == []
    initial = sync(carol, set_presence="offline")
    assert presence_of(initial, alice.user_id) == []
    # An initial sync of a room-mate carries the current presence.
    initial = sync(bob, set_presence="offline")
    events = presence_of(initial, alice.user_id)
    assert events and events[-1]["content"]["status_msg"] == "brb"
    # A later change arrives once, incrementally.
    since = initial["next_batch"]
    assert (
        put_status(alice, alice.user_id, {"presence": "online", "status_msg": "back"}).status == 200
    )
    body = sync_until(bob, since, lambda b: bool(presence_of(b, alice.user_id)))
    events = presence_of(body, alice.user_id)
    assert events and events[-1]["content"]["presence"] == "online"
    assert events[-1]["content"]["status_msg"] == "back"
    again = sync(bob, since=body["next_batch"], set_presence="offline")
    assert presence_of(again, alice.user_id) == []


def test_syncing_sets_presence(alice: Client, bob: Client) -> None:
    share_room(alice, bob)
    sync(alice)  # set_presence defaults to online
    resp = get_status(bob, alice.user_id)
    assert resp.status == 200, resp
    assert resp.body["presence"] == "online"
    sync(alice, set_presence="unavailable")
    assert get_status(bob, alice.user_id).body["presence"] == "unavailable"


def test_presence_disabled(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory({"presence": {"enabled": False}})
    alice, bob = new_user(server), new_user(server)
    share_room(alice, bob)
    resp = put_status(alice, alice.user_id, {"presence": "online", "status_msg": "hi"})
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    for client, user in ((alice, alice), (bob, alice), (alice, bob)):
        resp = get_status(client, user.user_id)
        assert resp.status == 403, resp
    # Syncing with set_presence still works, and no presence is ever sent.
    first = sync(alice, set_presence="online")
    assert first["presence"]["events"] == []
    body = sync(bob, set_presence="unavailable")
    assert body["presence"]["events"] == []
    body = sync(bob, since=body["next_batch"], timeout="300")
    assert body["presence"]["events"] == []
    assert sync(alice)["presence"]["events"] == []


def test_sync_with_set_presence_offline_does_not_change_presence(
    alice: Client, bob: Client
) -> None:
    """set_presence=offline means "do not mark me online", not "mark me offline"."""
    share_room(alice, bob)
    resp = put_status(alice, alice.user_id, {"presence": "online", "status_msg": "here"})
    assert resp.status == 200, resp
    sync(alice, set_presence="offline")
    body = get_status(bob, alice.user_id).body
    assert body["presence"] == "online", body
    assert body["status_msg"] == "here"
