"""/sync over real HTTP: initial and incremental syncs, invite and leave sections, account
data and tags, long-polling and its cap, filters (inline and stored), lazy-loaded members,
full_state, typing, receipts, read markers, and sync tokens that outlive a restart."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from tests.harness import Client, Response, ServerProcess, create_room, join, leave, new_user

JsonDict = dict[str, Any]


def q(value: str) -> str:
    """Percent-encode one path segment: room and event IDs may contain '/' and '+'."""
    return quote(value, safe="")


def send(client: Client, room_id: str, body: str, event_type: str = "m.room.message") -> str:
    resp = client.put(
        f"rooms/{q(room_id)}/send/{q(event_type)}/{secrets.token_hex(8)}",
        {"msgtype": "m.text", "body": body},
    )
    assert resp.status == 200, resp
    return str(resp.body["event_id"])


def put_state(client: Client, room_id: str, event_type: str, content: JsonDict) -> str:
    resp = client.put(f"rooms/{q(room_id)}/state/{q(event_type)}", content)
    assert resp.status == 200, resp
    return str(resp.body["event_id"])


def sync_raw(
    client: Client,
    since: str | None = None,
    timeout: int = 0,
    filter: Any = None,
    full_state: bool = False,
) -> Response:
    params: dict[str, str] = {"timeout": str(timeout)}
    if since is not None:
        params["since"] = since
    if filter is not None:
        params["filter"] = filter if isinstance(filter, str) else json.dumps(filter)
    if full_state:
        params["full_state"] = "true"
    return client.get("sync", params=params)


def sync(client: Client, since: str | None = None, **kwargs: Any) -> JsonDict:
    resp = sync_raw(client, since, **kwargs)
    assert resp.status == 200, resp
    assert isinstance(resp.body["next_batch"], str) and resp.body["next_batch"]
    return dict(resp.body)


def joined(body: JsonDict) -> JsonDict:
    return dict(body.get("rooms", {}).get("join", {}))


def section(body: JsonDict, name: str) -> JsonDict:
    return dict(body.get("rooms", {}).get(name, {}))


def timeline_events(room: JsonDict) -> list[JsonDict]:
    return list(room.get("timeline", {}).get("events", []))


def state_events(room: JsonDict) -> list[JsonDict]:
    return list(room.get("state", {}).get("events", []))


def bodies(events: list[JsonDict]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


def state_keys(events: list[JsonDict], event_type: str) -> set[str]:
    return {e["state_key"] for e in events if e["type"] == event_type}


def ephemeral_of(room: JsonDict, event_type: str) -> list[JsonDict]:
    return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == event_type]


def account_data_of(room: JsonDict, event_type: str) -> list[JsonDict]:
    return [e for e in room.get("account_data", {}).get("events", []) if e["type"] == event_type]


def sync_until(
    client: Client,
    since: str,
    predicate: Callable[[JsonDict], bool],
    deadline: float = 10.0,
    **kwargs: Any,
) -> tuple[JsonDict, str]:
    """Long-poll until a response satisfies ``predicate``; returns it and the next token."""
    end = time.monotonic() + deadline
    while True:
        body = sync(client, since, timeout=2000, **kwargs)
        since = body["next_batch"]
        if predicate(body):
            return body, since
        assert time.monotonic() < end, f"no matching sync response before the deadline: {body}"


# Initial sync


def test_initial_sync_joined_room(server: ServerProcess, alice: Client, bob: Client) -> None:
    carol = new_user(server)
    room_id = create_room(alice, topic="about things")
    join(bob, room_id)
    resp = alice.post(f"rooms/{q(room_id)}/invite", {"user_id": carol.user_id})
    assert resp.status == 200, resp
    event_id = send(alice, room_id, "hello world")

    body = sync(alice)
    assert isinstance(body["next_batch"], str)
    room = joined(body)[room_id]
    timeline = timeline_events(room)
    assert "hello world" in bodies(timeline)
    assert timeline[-1]["event_id"] == event_id
    assert timeline[-1]["sender"] == alice.user_id
    assert isinstance(room["timeline"]["limited"], bool)
    for event in timeline:
        assert {"event_id", "sender", "origin_server_ts", "type", "content"} <= set(event)
    # Together, state and timeline describe the room from its creation.
    everything = state_events(room) + timeline
    assert state_keys(everything, "m.room.create") == {""}
    assert state_keys(everything, "m.room.topic") == {""}
    assert {alice.user_id, bob.user_id, carol.user_id} <= state_keys(everything, "m.room.member")

    summary = room["summary"]
    assert summary["m.joined_member_count"] == 2
    assert summary["m.invited_member_count"] == 1
    # Unnamed room: heroes are required, and never include the syncing user.
    assert set(summary["m.heroes"]) == {bob.user_id, carol.user_id}
    assert set(room["unread_notifications"]) >= {"notification_count", "highlight_count"}

    # The invited user is counted too, but sees the room under "invite", not "join".
    carol_body = sync(carol)
    assert room_id not in joined(carol_body)
    assert room_id in section(carol_body, "invite")


def test_initial_sync_state_precedes_limited_timeline(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, name="State room")
    join(bob, room_id)
    for i in range(4):
        send(bob, room_id, f"m{i}")
    room = joined(sync(alice, filter={"room": {"timeline": {"limit": 2}}}))[room_id]
    assert bodies(timeline_events(room)) == ["m2", "m3"]
    assert room["timeline"]["limited"] is True
    state = state_events(room)
    # The state is the room's state at the start of the timeline: everything.
    for event_type in ("m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"):
        assert state_keys(state, event_type) == {""}, event_type
    assert state_keys(state, "m.room.member") == {alice.user_id, bob.user_id}
    name = next(e for e in state if e["type"] == "m.room.name")
    assert name["content"] == {"name": "State room"}
    timeline_ids = {e["event_id"] for e in timeline_events(room)}
    assert not timeline_ids & {e["event_id"] for e in state}


def test_invited_room_has_stripped_invite_state(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="private_chat", name="Secret plans")
    send(alice, room_id, "not for invitees")
    resp = alice.post(f"rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    assert resp.status == 200, resp

    body = sync(bob)
    assert room_id not in joined(body)
    invite = section(body, "invite")[room_id]
    events = invite["invite_state"]["events"]
    member = [e for e in events if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert len(member) == 1
    assert member[0]["content"]["membership"] == "invite"
    assert member[0]["sender"] == alice.user_id
    name = [e for e in events if e["type"] == "m.room.name"]
    assert name and name[0]["content"]["name"] == "Secret plans"
    assert any(e["type"] == "m.room.create" for e in events)
    for event in events:
        # Stripped state: no event IDs, no timestamps; never a timeline event.
        assert {"type", "state_key", "content", "sender"} <= set(event)
        assert "event_id" not in event and "origin_server_ts" not in event
        assert event["type"] != "m.room.message"

    # After joining, the room moves from "invite" to "join" in the next incremental sync.
    join(bob, room_id)
    after = sync(bob, body["next_batch"])
    assert room_id in joined(after)
    assert room_id not in section(after, "invite")


def test_left_rooms_need_include_leave_on_initial_sync(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    send(alice, room_id, "before leaving")
    leave(bob, room_id)

    plain = sync(bob)
    assert room_id not in joined(plain)
    assert room_id not in section(plain, "leave")

    with_leave = sync(bob, filter={"room": {"include_leave": True}})
    assert room_id not in joined(with_leave)
    left = section(with_leave, "leave")[room_id]
    everything = timeline_events(left) + state_events(left)
    mine = [e for e in everything if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert mine and mine[-1]["content"]["membership"] == "leave"
    assert "before leaving" in bodies(timeline_events(left))


def test_leave_in_incremental_sync_then_nothing_more(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    send(alice, room_id, "while joined")
    token = sync(bob)["next_batch"]

    leave(bob, room_id)
    body = sync(bob, token)
    assert room_id not in joined(body)
    left = section(body, "leave")[room_id]
    leave_events = [
        e
        for e in timeline_events(left)
        if e["type"] == "m.room.member" and e["state_key"] == bob.user_id
    ]
    assert leave_events and leave_events[-1]["content"]["membership"] == "leave"
    assert "while joined" not in bodies(timeline_events(left))  # already seen

    # Whatever happens in the room afterwards is never shown to the leaver.
    send(alice, room_id, "after bob left")
    put_state(alice, room_id, "m.room.topic", {"topic": "changed after bob left"})
    later = sync(bob, body["next_batch"])
    for name in ("join", "leave", "invite"):
        assert room_id not in section(later, name), name

    again = sync(bob, filter={"room": {"include_leave": True}})
    left = section(again, "leave")[room_id]
    assert "after bob left" not in bodies(timeline_events(left))
    for event in timeline_events(left) + state_events(left):
        assert event["type"] != "m.room.topic", event

    full = sync(bob, token, full_state=True, filter={"room": {"include_leave": True}})
    for event in timeline_events(section(full, "leave").get(room_id, {})):
        assert event["type"] != "m.room.topic"
        assert event.get("content", {}).get("body") != "after bob left"


# Incremental sync


def test_incremental_sync_only_changed_rooms(alice: Client) -> None:
    busy = create_room(alice)
    quiet = create_room(alice)
    token = sync(alice)["next_batch"]
    assert {busy, quiet} <= set(joined(sync(alice)))

    send(alice, busy, "news")
    body = sync(alice, token)
    rooms = joined(body)
    assert busy in rooms
    assert quiet not in rooms
    assert bodies(timeline_events(rooms[busy])) == ["news"]
    assert rooms[busy]["timeline"]["limited"] is False
    # Nothing changed in state since the token, so no state is repeated.
    assert state_events(rooms[busy]) == []

    # Nothing has changed since the new token.
    idle = sync(alice, body["next_batch"])
    assert joined(idle) == {}


def test_global_account_data_once(alice: Client) -> None:
    token = sync(alice)["next_batch"]
    resp = alice.put(
        f"user/{q(alice.user_id)}/account_data/com.example.settings", {"theme": "dark"}
    )
    assert resp.status == 200, resp

    body = sync(alice, token)
    events = [e for e in body["account_data"]["events"] if e["type"] == "com.example.settings"]
    assert events == [{"type": "com.example.settings", "content": {"theme": "dark"}}]

    again = sync(alice, body["next_batch"])
    assert not [e for e in again["account_data"]["events"] if e["type"] == "com.example.settings"]

    # An initial sync always includes the latest content.
    resp = alice.put(f"user/{q(alice.user_id)}/account_data/com.example.settings", {"theme": "x"})
    assert resp.status == 200, resp
    initial = sync(alice)
    events = [e for e in initial["account_data"]["events"] if e["type"] == "com.example.settings"]
    assert events == [{"type": "com.example.settings", "content": {"theme": "x"}}]


def test_room_account_data_and_tags(alice: Client) -> None:
    room_id = create_room(alice)
    other = create_room(alice)
    token = sync(alice)["next_batch"]
    base = f"user/{q(alice.user_id)}/rooms/{q(room_id)}"

    resp = alice.put(f"{base}/account_data/com.example.room", {"colour": "blue"})
    assert resp.status == 200, resp
    body = sync(alice, token)
    rooms = joined(body)
    assert other not in rooms
    data = account_data_of(rooms[room_id], "com.example.room")
    assert [e["content"] for e in data] == [{"colour": "blue"}]
    token = body["next_batch"]

    resp = alice.put(f"{base}/tags/u.work", {"order": 0.25})
    assert resp.status == 200, resp
    resp = alice.put(f"{base}/tags/m.favourite", {})
    assert resp.status == 200, resp
    resp = alice.get(f"{base}/tags")
    assert resp.status == 200, resp
    assert resp.body == {"tags": {"u.work": {"order": 0.25}, "m.favourite": {}}}

    body = sync(alice, token)
    tags = account_data_of(joined(body)[room_id], "m.tag")
    assert tags and tags[-1]["content"] == {"tags": {"u.work": {"order": 0.25}, "m.favourite": {}}}
    # The earlier room account data is not repeated.
    assert not account_data_of(joined(body)[room_id], "com.example.room")
    token = body["next_batch"]

    resp = alice.delete(f"{base}/tags/u.work")
    assert resp.status == 200, resp
    resp = alice.get(f"{base}/tags")
    assert resp.status == 200, resp
    assert resp.body == {"tags": {"m.favourite": {}}}
    body = sync(alice, token)
    tags = account_data_of(joined(body)[room_id], "m.tag")
    assert tags and tags[-1]["content"] == {"tags": {"m.favourite": {}}}

    # Initial sync: both kinds of room account data are there.
    room = joined(sync(alice))[room_id]
    assert [e["content"] for e in account_data_of(room, "m.tag")] == [{"tags": {"m.favourite": {}}}]
    assert [e["content"] for e in account_data_of(room, "com.example.room")] == [{"colour": "blue"}]


def test_tags_of_other_users_are_forbidden(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    base = f"user/{q(alice.user_id)}/rooms/{q(room_id)}/tags"
    assert bob.get(base).status == 403
    assert bob.put(f"{base}/u.x", {}).status == 403
    assert bob.delete(f"{base}/u.x").status == 403


# Long-polling


def test_long_poll_wakes_on_new_message(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    token = sync(bob)["next_batch"]

    sent_at: list[float] = []

    def send_later() -> None:
        time.sleep(0.5)
        sent_at.append(time.monotonic())
        send(alice, room_id, "wake up")

    thread = threading.Thread(target=send_later)
    started = time.monotonic()
    thread.start()
    try:
        body = sync(bob, token, timeout=10_000)
    finally:
        thread.join()
    finished = time.monotonic()
    assert finished - started < 2.0
    assert sent_at and finished - sent_at[0] < 1.5
    assert bodies(timeline_events(joined(body)[room_id])) == ["wake up"]


def test_idle_long_poll_returns_after_timeout(alice: Client) -> None:
    create_room(alice)
    token = sync(alice)["next_batch"]
    started = time.monotonic()
    body = sync(alice, token, timeout=1000)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3.0, elapsed
    assert joined(body) == {}
    assert section(body, "invite") == {} and section(body, "leave") == {}


def test_sync_timeout_is_capped(server_factory: Callable[..., ServerProcess]) -> None:
    proc = server_factory({"rooms": {"max_sync_timeout": "2s"}})
    user = new_user(proc)
    token = sync(user)["next_batch"]
    started = time.monotonic()
    sync(user, token, timeout=10_000)
    elapsed = time.monotonic() - started
    assert 1.8 <= elapsed < 5.0, elapsed


# Filters


def test_inline_filter_timeline_limit_and_prev_batch(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    token = sync(bob)["next_batch"]
    for i in range(5):
        send(alice, room_id, f"m{i}")

    body = sync(bob, token, filter={"room": {"timeline": {"limit": 2}}})
    room = joined(body)[room_id]
    assert bodies(timeline_events(room)) == ["m3", "m4"]
    assert room["timeline"]["limited"] is True
    prev_batch = room["timeline"]["prev_batch"]

    resp = bob.get(
        f"rooms/{q(room_id)}/messages", params={"from": prev_batch, "dir": "b", "limit": "3"}
    )
    assert resp.status == 200, resp
    assert bodies(resp.body["chunk"]) == ["m2", "m1", "m0"]

    # A timeline that fits is not limited.
    send(alice, room_id, "m5")
    body = sync(bob, body["next_batch"], filter={"room": {"timeline": {"limit": 2}}})
    room = joined(body)[room_id]
    assert bodies(timeline_events(room)) == ["m5"]
    assert room["timeline"]["limited"] is False


def test_uploaded_filter(alice: Client, bob: Client) -> None:
    definition = {"room": {"timeline": {"limit": 1}}}
    resp = alice.post(f"user/{q(alice.user_id)}/filter", definition)
    assert resp.status == 200, resp
    filter_id = resp.body["filter_id"]
    assert isinstance(filter_id, str) and filter_id

    resp = alice.get(f"user/{q(alice.user_id)}/filter/{q(filter_id)}")
    assert resp.status == 200, resp
    assert resp.body == definition

    resp = alice.get(f"user/{q(alice.user_id)}/filter/987654321")
    assert resp.status == 404, resp
    assert resp.body["errcode"] == "M_NOT_FOUND"
    resp = bob.get(f"user/{q(alice.user_id)}/filter/{q(filter_id)}")
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    resp = bob.post(f"user/{q(alice.user_id)}/filter", definition)
    assert resp.status == 403, resp

    room_id = create_room(alice)
    send(alice, room_id, "first")
    send(alice, room_id, "second")
    room = joined(sync(alice, filter=filter_id))[room_id]
    assert bodies(timeline_events(room)) == ["second"]
    assert len(timeline_events(room)) == 1
    assert room["timeline"]["limited"] is True


def test_invalid_filters_are_rejected(alice: Client) -> None:
    cases = [
        ({"room": {"timeline": {"limit": "x"}}}, "limit"),
        ({"room": {"timeline": {"types": "m.room.message"}}}, "types"),
        ({"room": []}, "room"),
    ]
    for definition, field_name in cases:
        resp = sync_raw(alice, filter=definition)
        assert resp.status == 400, (definition, resp)
        assert resp.body["errcode"] == "M_BAD_JSON", resp
        assert field_name in resp.body["error"], resp
        resp = alice.post(f"user/{q(alice.user_id)}/filter", definition)
        assert resp.status == 400, (definition, resp)
        assert resp.body["errcode"] == "M_BAD_JSON", resp
        assert field_name in resp.body["error"], resp


def test_malformed_since_token(alice: Client) -> None:
    for token in ("garbage", "sx", "s1_x", "s1_-2", "t1_2_3_4"):
        resp = sync_raw(alice, since=token)
        assert resp.status == 400, (token, resp)
        assert resp.body["errcode"] == "M_INVALID_PARAM", resp


def test_timeline_type_and_sender_filters(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    token = sync(bob)["next_batch"]
    send(bob, room_id, "from bob")
    send(alice, room_id, "custom", event_type="com.example.custom")
    send(alice, room_id, "from alice")

    def timeline_with(event_filter: JsonDict) -> list[JsonDict]:
        body = sync(bob, token, filter={"room": {"timeline": event_filter}})
        return timeline_events(joined(body).get(room_id, {}))

    only_messages = timeline_with({"types": ["m.room.message"]})
    assert {e["type"] for e in only_messages} == {"m.room.message"}
    assert bodies(only_messages) == ["from bob", "from alice"]

    no_messages = timeline_with({"not_types": ["m.room.message"]})
    assert [e["type"] for e in no_messages] == ["com.example.custom"]

    wildcard = timeline_with({"types": ["com.example.*"]})
    assert [e["type"] for e in wildcard] == ["com.example.custom"]

    from_bob = timeline_with({"senders": [bob.user_id]})
    assert [e["sender"] for e in from_bob] == [bob.user_id]
    assert bodies(from_bob) == ["from bob"]

    not_bob = timeline_with({"not_senders": [bob.user_id]})
    assert {e["sender"] for e in not_bob} == {alice.user_id}
    assert len(not_bob) == 2


def test_timeline_limit_counts_filtered_events(alice: Client, bob: Client) -> None:
    """The limit caps the events that pass the filter, not the events before filtering."""
    room_id = create_room(alice)
    join(bob, room_id)
    token = sync(bob)["next_batch"]
    send(bob, room_id, "from bob")
    send(alice, room_id, "custom", event_type="com.example.custom")
    for i in range(4):
        send(alice, room_id, f"noise {i}")

    def timeline_with(event_filter: JsonDict) -> list[JsonDict]:
        body = sync(bob, token, filter={"room": {"timeline": event_filter}})
        return timeline_events(joined(body).get(room_id, {}))

    assert bodies(timeline_with({"senders": [bob.user_id], "limit": 2})) == ["from bob"]
    custom = timeline_with({"types": ["com.example.*"], "limit": 2})
    assert [e["type"] for e in custom] == ["com.example.custom"]
    custom = timeline_with({"not_types": ["m.room.message"], "limit": 2})
    assert [e["type"] for e in custom] == ["com.example.custom"]


def test_room_filter_selects_rooms(alice: Client) -> None:
    wanted = create_room(alice)
    unwanted = create_room(alice)
    rooms = joined(sync(alice, filter={"room": {"rooms": [wanted]}}))
    assert wanted in rooms and unwanted not in rooms
    rooms = joined(sync(alice, filter={"room": {"not_rooms": [wanted]}}))
    assert unwanted in rooms and wanted not in rooms


def lazy_room(server: ServerProcess, alice: Client, bob: Client) -> tuple[str, list[Client]]:
    """A named room of five; only carol and eve have spoken, in the last two events."""
    carol, dave, eve = new_user(server), new_user(server), new_user(server)
    room_id = create_room(alice, name="Lazy room")
    for member in (bob, carol, dave, eve):
        join(member, room_id)
    send(carol, room_id, "carol speaks")
    send(eve, room_id, "eve speaks")
    return room_id, [alice, bob, carol, dave, eve]


LAZY = {"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": True}}}


def test_lazy_load_members(server: ServerProcess, alice: Client, bob: Client) -> None:
    room_id, everyone = lazy_room(server, alice, bob)
    _, _, carol, dave, eve = everyone
    room = joined(sync(bob, filter=LAZY))[room_id]
    timeline = timeline_events(room)
    assert bodies(timeline) == ["carol speaks", "eve speaks"]
    assert {e["sender"] for e in timeline} == {carol.user_id, eve.user_id}
    members = state_keys(state_events(room), "m.room.member")
    # The senders and the syncing user; nobody else, unless listed as a hero (whose member
    # events the spec requires; a named room needs no heroes).
    assert {carol.user_id, eve.user_id, bob.user_id} <= members
    heroes = set(room.get("summary", {}).get("m.heroes", []))
    assert members <= {carol.user_id, eve.user_id, bob.user_id} | heroes
    for silent in (alice, dave):
        assert silent.user_id not in members or silent.user_id in heroes
    # Other state is still all there.
    assert state_keys(state_events(room), "m.room.create") == {""}
    assert state_keys(state_events(room), "m.room.name") == {""}

    # Without lazy loading every member is in the state.
    eager = joined(sync(bob, filter={"room": {"timeline": {"limit": 2}}}))[room_id]
    assert state_keys(state_events(eager), "m.room.member") == {u.user_id for u in everyone}


def test_lazy_load_members_includes_heroes(
    server: ServerProcess, alice: Client, bob: Client
) -> None:
    """Spec (sync, RoomSummary.m.heroes): with lazy-loading, the heroes' member events MUST be
    in the state unless redundant."""
    room_id, _ = lazy_room(server, alice, bob)
    room = joined(sync(bob, filter=LAZY))[room_id]
    members = state_keys(state_events(room), "m.room.member")
    timeline_members = state_keys(timeline_events(room), "m.room.member")
    heroes = set(room.get("summary", {}).get("m.heroes", []))
    assert heroes <= members | timeline_members


def test_lazy_load_members_in_incremental_sync_brings_new_senders(
    server: ServerProcess, alice: Client, bob: Client
) -> None:
    """A member who has not spoken before sends a message: their member event comes in that
    incremental sync's state, as it would in an initial one."""
    room_id, everyone = lazy_room(server, alice, bob)
    _, _, _, dave, _ = everyone
    token = sync(bob, filter=LAZY)["next_batch"]
    send(dave, room_id, "dave finally speaks")
    room = joined(sync(bob, token, filter=LAZY))[room_id]
    assert bodies(timeline_events(room)) == ["dave finally speaks"]
    assert timeline_events(room)[0]["sender"] == dave.user_id
    assert dave.user_id in state_keys(state_events(room), "m.room.member")
    # Nobody else's membership is repeated.
    assert state_keys(state_events(room), "m.room.member") == {dave.user_id}


def test_full_state_in_incremental_sync(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, name="Full")
    join(bob, room_id)
    token = sync(bob)["next_batch"]
    send(alice, room_id, "new message")

    started = time.monotonic()
    body = sync(bob, token, full_state=True, timeout=5000)
    assert time.monotonic() - started < 2.0
    room = joined(body)[room_id]
    # The timeline still starts at the token.
    assert bodies(timeline_events(room)) == ["new message"]
    assert len(timeline_events(room)) == 1
    state = state_events(room)
    for event_type in ("m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"):
        assert state_keys(state, event_type) == {""}, event_type
    assert state_keys(state, "m.room.member") == {alice.user_id, bob.user_id}

    # Without full_state, nothing of that is repeated.
    plain = joined(sync(bob, token))[room_id]
    assert state_events(plain) == []


# Typing


def test_typing(server: ServerProcess, alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    token = sync(bob)["next_batch"]
    path = f"rooms/{q(room_id)}/typing/{q(alice.user_id)}"

    resp = alice.put(path, {"typing": True, "timeout": 30_000})
    assert resp.status == 200, resp
    body, token = sync_until(bob, token, lambda b: room_id in joined(b))
    typing = ephemeral_of(joined(body)[room_id], "m.typing")
    assert typing and typing[-1]["content"]["user_ids"] == [alice.user_id]

    resp = alice.put(path, {"typing": False})
    assert resp.status == 200, resp
    body, token = sync_until(bob, token, lambda b: room_id in joined(b))
    typing = ephemeral_of(joined(body)[room_id], "m.typing")
    assert typing and typing[-1]["content"]["user_ids"] == []

    # Not for someone else, and not in a room you are not in.
    resp = bob.put(path, {"typing": True, "timeout": 1000})
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    outsider = new_user(server)
    resp = outsider.put(
        f"rooms/{q(room_id)}/typing/{q(outsider.user_id)}", {"typing": True, "timeout": 1000}
    )
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    # Neither attempt shows anyone typing.
    assert room_id not in joined(sync(bob, token))


def test_typing_times_out(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    token = sync(bob)["next_batch"]
    resp = alice.put(
        f"rooms/{q(room_id)}/typing/{q(alice.user_id)}", {"typing": True, "timeout": 1000}
    )
    assert resp.status == 200, resp
    started = time.monotonic()
    body, token = sync_until(bob, token, lambda b: room_id in joined(b))
    assert ephemeral_of(joined(body)[room_id], "m.typing")[-1]["content"]["user_ids"] == [
        alice.user_id
    ]

    # The expiry itself wakes a waiting sync, which then shows nobody typing.
    body = sync(bob, token, timeout=10_000)
    elapsed = time.monotonic() - started
    assert elapsed < 4.0, elapsed
    typing = ephemeral_of(joined(body)[room_id], "m.typing")
    assert typing and typing[-1]["content"]["user_ids"] == []


# Receipts and read markers


def test_read_receipt_reaches_other_members(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    event_id = send(alice, room_id, "please read")
    token = sync(alice)["next_batch"]

    resp = bob.post(f"rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})
    assert resp.status == 200, resp
    body = sync(alice, token)
    receipts = ephemeral_of(joined(body)[room_id], "m.receipt")
    assert receipts, body
    entry = receipts[-1]["content"][event_id]["m.read"][bob.user_id]
    assert isinstance(entry["ts"], int)

    # Initial syncs carry the latest receipts too.
    receipts = ephemeral_of(joined(sync(alice))[room_id], "m.receipt")
    assert bob.user_id in receipts[-1]["content"][event_id]["m.read"]


def test_private_read_receipt_only_for_its_owner(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    event_id = send(alice, room_id, "read me quietly")
    alice_token = sync(alice)["next_batch"]
    bob_token = sync(bob)["next_batch"]

    resp = bob.post(f"rooms/{q(room_id)}/receipt/m.read.private/{q(event_id)}", {})
    assert resp.status == 200, resp

    mine = ephemeral_of(joined(sync(bob, bob_token))[room_id], "m.receipt")
    assert bob.user_id in mine[-1]["content"][event_id]["m.read.private"]

    def no_private(body: JsonDict) -> None:
        for receipt in ephemeral_of(joined(body).get(room_id, {}), "m.receipt"):
            for by_type in receipt["content"].values():
                assert "m.read.private" not in by_type, receipt

    no_private(sync(alice, alice_token))
    no_private(sync(alice))


def test_receipt_errors(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    event_id = send(alice, room_id, "hello")
    resp = bob.post(f"rooms/{q(room_id)}/receipt/m.bogus/{q(event_id)}", {})
    assert resp.status == 400, resp

    private = create_room(alice, preset="private_chat")
    hidden = send(alice, private, "hidden")
    resp = bob.post(f"rooms/{q(private)}/receipt/m.read/{q(hidden)}", {})
    assert resp.status == 404, resp
    # An event from another room, addressed to a room the user is in, is not found either.
    resp = bob.post(f"rooms/{q(room_id)}/receipt/m.read/{q(hidden)}", {})
    assert resp.status == 404, resp


def test_read_markers(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    first = send(alice, room_id, "first")
    second = send(alice, room_id, "second")
    alice_token = sync(alice)["next_batch"]
    bob_token = sync(bob)["next_batch"]

    resp = bob.post(f"rooms/{q(room_id)}/read_markers", {"m.fully_read": first, "m.read": second})
    assert resp.status == 200, resp

    bob_room = joined(sync(bob, bob_token))[room_id]
    fully_read = account_data_of(bob_room, "m.fully_read")
    assert fully_read and fully_read[-1]["content"] == {"event_id": first}
    resp = bob.get(f"user/{q(bob.user_id)}/rooms/{q(room_id)}/account_data/m.fully_read")
    assert resp.status == 200, resp
    assert resp.body == {"event_id": first}

    alice_room = joined(sync(alice, alice_token))[room_id]
    receipts = ephemeral_of(alice_room, "m.receipt")
    assert receipts and bob.user_id in receipts[-1]["content"][second]["m.read"]
    # The fully-read marker is private account data: nothing of it reaches alice.
    assert not account_data_of(alice_room, "m.fully_read")


# Restarts


def test_sync_token_survives_restart(server_factory: Callable[..., ServerProcess]) -> None:
    proc = server_factory()
    alice, bob = new_user(proc), new_user(proc)
    room_id = create_room(alice)
    join(bob, room_id)
    send(alice, room_id, "old news")
    token = sync(bob)["next_batch"]
    send(alice, room_id, "before restart")

    proc.restart()

    send(alice, room_id, "after restart")
    resp = sync_raw(bob, token)
    assert resp.status == 200, resp
    room = joined(resp.body)[room_id]
    assert bodies(timeline_events(room)) == ["before restart", "after restart"]
    assert room["timeline"]["limited"] is False
    assert state_events(room) == []

    # And the new token keeps working: nothing more has happened.
    later = sync(bob, resp.body["next_batch"])
    assert joined(later) == {}


def test_timeline_walks_past_history_hidden_before_the_join(alice: Client, bob: Client) -> None:
    """History hidden before the user's join: the first page of a small limit finds hidden
    events, so the timeline reads further pages (each twice the last) back past all of
    them to the visible events before the visibility changed."""
    room_id = create_room(alice)
    put_state(alice, room_id, "m.room.history_visibility", {"history_visibility": "joined"})
    for i in range(60):
        send(alice, room_id, f"before {i}")
    join(bob, room_id)
    send(alice, room_id, "after")
    body = sync(bob, filter={"room": {"timeline": {"limit": 3}}})
    room = joined(body)[room_id]
    events = timeline_events(room)
    # The visibility change itself was sent while history was shared.
    assert [e["type"] for e in events] == [
        "m.room.history_visibility", "m.room.member", "m.room.message"
    ]  # fmt: skip
    assert events[1]["state_key"] == bob.user_id
    assert bodies(events) == ["after"]
    assert room["timeline"]["limited"] is True  # the room's creation events lie beyond
