"""Relations over real HTTP: /relations with its filters and pagination, /threads, and the
bundled aggregations (m.thread, m.replace, m.reference) on events served to clients."""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import quote

import pytest

from tests.harness import Client, Response, ServerProcess, join, new_user

JsonDict = dict[str, Any]


def q(value: str) -> str:
    return quote(value, safe="")


def create_room(client: Client, **body: Any) -> str:
    resp = client.post("createRoom", body)
    assert resp.status == 200, resp
    return str(resp.body["room_id"])


def send_event(client: Client, room_id: str, event_type: str, content: JsonDict) -> str:
    resp = client.put(f"rooms/{q(room_id)}/send/{q(event_type)}/{secrets.token_hex(8)}", content)
    assert resp.status == 200, resp
    return str(resp.body["event_id"])


def send(client: Client, room_id: str, body: str, **extra: Any) -> str:
    return send_event(
        client, room_id, "m.room.message", {"msgtype": "m.text", "body": body, **extra}
    )


def reply_in_thread(
    client: Client, room_id: str, root: str, body: str, event_type: str = "m.room.message"
) -> str:
    return send_event(
        client,
        room_id,
        event_type,
        {
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": root},
            },
        },
    )


def edit(client: Client, room_id: str, original: str, body: str) -> str:
    return send(
        client,
        room_id,
        "* " + body,
        **{
            "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )


def reference(client: Client, room_id: str, target: str) -> str:
    return send(
        client,
        room_id,
        "see above",
        **{"m.relates_to": {"rel_type": "m.reference", "event_id": target}},
    )


def relations(client: Client, room_id: str, event_id: str, *suffix: str, **params: Any) -> Response:
    path = f"/_matrix/client/v1/rooms/{q(room_id)}/relations/{q(event_id)}"
    path += "".join("/" + q(s) for s in suffix)
    return client.get(path, params={k: str(v) for k, v in params.items()})


def relation_ids(client: Client, room_id: str, event_id: str, *suffix: str, **params: Any):
    resp = relations(client, room_id, event_id, *suffix, **params)
    assert resp.status == 200, resp
    return [e["event_id"] for e in resp.body["chunk"]]


def threads(client: Client, room_id: str, **params: Any) -> Response:
    return client.get(
        f"/_matrix/client/v1/rooms/{q(room_id)}/threads",
        params={k: str(v) for k, v in params.items()},
    )


def thread_ids(client: Client, room_id: str, **params: Any) -> list[str]:
    resp = threads(client, room_id, **params)
    assert resp.status == 200, resp
    return [e["event_id"] for e in resp.body["chunk"]]


def get_event(client: Client, room_id: str, event_id: str) -> JsonDict:
    resp = client.get(f"rooms/{q(room_id)}/event/{q(event_id)}")
    assert resp.status == 200, resp
    return dict(resp.body)


def bundled(event: JsonDict) -> JsonDict:
    return dict(event.get("unsigned", {}).get("m.relations", {}))


def from_messages(client: Client, room_id: str, event_id: str) -> JsonDict:
    resp = client.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "100"})
    assert resp.status == 200, resp
    found = [e for e in resp.body["chunk"] if e["event_id"] == event_id]
    assert len(found) == 1, resp.body["chunk"]
    return dict(found[0])


@pytest.fixture
def room(alice: Client, bob: Client) -> str:
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    return room_id


# /relations


def test_relations_listing_and_filters(alice: Client, bob: Client, room: str) -> None:
    root = send(alice, room, "root")
    r1 = reply_in_thread(bob, room, root, "first")
    react = send_event(
        bob,
        room,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}},
    )
    r2 = reply_in_thread(alice, room, root, "a note", "com.example.note")
    r3 = reply_in_thread(bob, room, root, "third")
    send(alice, room, "unrelated")
    # All children, newest first by default.
    assert relation_ids(bob, room, root) == [r3, r2, react, r1]
    assert relation_ids(bob, room, root, dir="f") == [r1, react, r2, r3]
    # By rel_type, and by rel_type and event type.
    assert relation_ids(bob, room, root, "m.thread") == [r3, r2, r1]
    assert relation_ids(bob, room, root, "m.thread", "m.room.message") == [r3, r1]
    assert relation_ids(bob, room, root, "m.thread", "com.example.note") == [r2]
    assert relation_ids(bob, room, root, "m.annotation") == [react]
    assert relation_ids(bob, room, root, "m.replace") == []
    # Children are full client events.
    chunk = relations(bob, room, root, "m.thread").body["chunk"]
    assert chunk[0]["content"]["body"] == "third"
    assert chunk[0]["sender"] == bob.user_id and chunk[0]["room_id"] == room
    assert chunk[0]["type"] == "m.room.message"
    assert "signatures" not in chunk[0] and "auth_events" not in chunk[0]
    # An event without children has none; a thread reply has no children of its own.
    assert relation_ids(bob, room, r1) == []


def test_relations_pagination(alice: Client, bob: Client, room: str) -> None:
    root = send(alice, room, "root")
    replies = [reply_in_thread(bob, room, root, f"reply {i}") for i in range(5)]

    def collect(**params: Any) -> tuple[list[str], int]:
        seen: list[str] = []
        pages = 0
        token = None
        while pages < 10:
            extra = dict(params)
            if token is not None:
                extra["from"] = token
            resp = relations(alice, room, root, "m.thread", **extra)
            assert resp.status == 200, resp
            pages += 1
            chunk = [e["event_id"] for e in resp.body["chunk"]]
            assert len(chunk) <= params["limit"]
            seen += chunk
            token = resp.body.get("next_batch")
            if token is None:
                break
        return seen, pages

    first = relations(alice, room, root, "m.thread", limit=2)
    assert first.status == 200, first
    assert [e["event_id"] for e in first.body["chunk"]] == replies[:-3:-1]
    assert isinstance(first.body.get("next_batch"), str)
    seen, pages = collect(limit=2)
    assert seen == list(reversed(replies))
    assert pages >= 3
    seen, _ = collect(limit=2, dir="f")
    assert seen == replies
    seen, _ = collect(limit=1)
    assert seen == list(reversed(replies))
    # Everything in one page: no next_batch.
    whole = relations(alice, room, root, "m.thread", limit=10)
    assert len(whole.body["chunk"]) == 5 and "next_batch" not in whole.body


def test_relations_of_unknown_event_and_bad_token(alice: Client, room: str) -> None:
    resp = relations(alice, room, "$nosuchevent")
    assert resp.status == 404, resp
    assert resp.body["errcode"] == "M_NOT_FOUND"
    root = send(alice, room, "root")
    assert relations(alice, room, root, **{"from": "garbage"}).status == 400


def test_relations_need_access_to_the_parent(
    server: ServerProcess, alice: Client, bob: Client
) -> None:
    carol = new_user(server)
    private = create_room(alice, preset="private_chat")
    root = send(alice, private, "secret root")
    reply_in_thread(alice, private, root, "secret reply")
    for suffix in ((), ("m.thread",), ("m.thread", "m.room.message")):
        resp = relations(carol, private, root, *suffix)
        assert resp.status == 404, (suffix, resp)
        assert resp.body["errcode"] == "M_NOT_FOUND"
    # A member who may not see the parent (history visible to joined members only) is
    # refused too, even after joining.
    joined_only = create_room(
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    early = send(alice, joined_only, "before bob")
    before = reply_in_thread(alice, joined_only, early, "also before bob")
    join(bob, joined_only)
    later = reply_in_thread(alice, joined_only, early, "after bob joined")
    resp = relations(bob, joined_only, early)
    assert resp.status == 404, resp
    assert relation_ids(alice, joined_only, early) == [later, before]
    # Relations of an event bob can see list only what he can see.
    after = send(alice, joined_only, "visible to bob")
    visible = reply_in_thread(alice, joined_only, after, "visible reply")
    assert relation_ids(bob, joined_only, after) == [visible]


def test_relations_of_an_event_in_another_room(alice: Client, bob: Client, room: str) -> None:
    other = create_room(alice)
    root = send(alice, room, "root")
    reply_in_thread(bob, room, root, "reply")
    resp = relations(alice, other, root)
    assert resp.status == 404, resp
    resp = relations(alice, other, root, "m.thread")
    assert resp.status == 404, resp


def test_cross_room_children_are_ignored(alice: Client, bob: Client, room: str) -> None:
    """A child in another room does not relate to the parent (the spec: ignored)."""
    other = create_room(alice)
    root = send(alice, room, "root")
    genuine = reply_in_thread(bob, room, root, "genuine reply")
    reply_in_thread(alice, other, root, "reply from elsewhere")
    send(
        alice,
        other,
        "edit from elsewhere",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "hijacked"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": root},
        },
    )
    assert relation_ids(alice, room, root) == [genuine]
    assert thread_ids(alice, room) == [root]
    assert thread_ids(alice, other) == []
    relations_of_root = bundled(get_event(alice, room, root))
    assert relations_of_root["m.thread"]["count"] == 1, relations_of_root
    assert relations_of_root["m.thread"]["latest_event"]["event_id"] == genuine
    assert "m.replace" not in relations_of_root


# /threads


def test_threads_list(server: ServerProcess, alice: Client, bob: Client, room: str) -> None:
    a = send(alice, room, "thread A")
    b = send(alice, room, "thread B")
    c = send(bob, room, "thread C")
    send(alice, room, "no thread here")
    reply_in_thread(alice, room, a, "a1")
    reply_in_thread(bob, room, b, "b1")
    reply_in_thread(alice, room, a, "a2")
    # Most recently active first; roots without replies are not threads.
    assert thread_ids(alice, room) == [a, b]
    assert thread_ids(alice, room, include="all") == [a, b]
    assert thread_ids(bob, room, include="participated") == [b]
    assert thread_ids(alice, room, include="participated") == [a, b]  # she sent both roots
    reply_in_thread(alice, room, c, "c1")
    assert thread_ids(alice, room) == [c, a, b]
    assert thread_ids(bob, room, include="participated") == [c, b]  # bob sent root C
    # Roots come with their thread summary.
    chunk = threads(alice, room).body["chunk"]
    summary = bundled(chunk[1])["m.thread"]
    assert chunk[1]["event_id"] == a
    assert summary["count"] == 2 and summary["latest_event"]["content"]["body"] == "a2"
    # Pagination.
    seen: list[str] = []
    token = None
    for _ in range(5):
        params: JsonDict = {"limit": 1}
        if token:
            params["from"] = token
        resp = threads(alice, room, **params)
        assert resp.status == 200, resp
        assert len(resp.body["chunk"]) <= 1
        seen += [e["event_id"] for e in resp.body["chunk"]]
        token = resp.body.get("next_batch")
        if not token:
            break
    assert seen == [c, a, b]
    assert threads(alice, room, include="mine").status == 400


def test_threads_of_a_room_you_cannot_see(server: ServerProcess, alice: Client) -> None:
    carol = new_user(server)
    private = create_room(alice, preset="private_chat")
    root = send(alice, private, "secret")
    reply_in_thread(alice, private, root, "secret reply")
    resp = threads(carol, private)
    # threads_list.yaml: 403 when the user cannot view or peek on the room.
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"


# Bundled aggregations


def test_thread_summary_bundled(
    server: ServerProcess, alice: Client, bob: Client, room: str
) -> None:
    carol = new_user(server)
    join(carol, room)
    root = send(alice, room, "root")
    reply_in_thread(bob, room, root, "first")
    second = reply_in_thread(bob, room, root, "second")
    for client, participated in ((alice, True), (bob, True), (carol, False)):
        for event in (get_event(client, room, root), from_messages(client, room, root)):
            summary = bundled(event)["m.thread"]
            assert summary["count"] == 2, event
            assert summary["latest_event"]["event_id"] == second
            assert summary["latest_event"]["content"]["body"] == "second"
            assert summary["latest_event"]["sender"] == bob.user_id
            assert summary["latest_event"]["room_id"] == room
            assert summary["current_user_participated"] is participated, client.user_id
    # The replies themselves carry no thread summary.
    assert "m.thread" not in bundled(get_event(alice, room, second))
    # A reply from carol makes her a participant and the latest event.
    third = reply_in_thread(carol, room, root, "third")
    summary = bundled(get_event(carol, room, root))["m.thread"]
    assert summary["count"] == 3 and summary["latest_event"]["event_id"] == third
    assert summary["current_user_participated"] is True


def test_latest_thread_event_carries_its_own_aggregations(
    alice: Client, bob: Client, room: str
) -> None:
    root = send(alice, room, "root")
    latest = reply_in_thread(bob, room, root, "typo")
    fixed = edit(bob, room, latest, "fixed")
    summary = bundled(get_event(alice, room, root))["m.thread"]
    assert summary["latest_event"]["event_id"] == latest
    assert bundled(summary["latest_event"])["m.replace"]["event_id"] == fixed


def test_latest_edit_by_original_sender_bundled(alice: Client, bob: Client, room: str) -> None:
    original = send(alice, room, "I like cake")
    edit(alice, room, original, "I like pie")
    latest = edit(alice, room, original, "I like tea")
    edit(bob, room, original, "bob was here")  # later, but not by the sender: ignored
    for event in (get_event(bob, room, original), from_messages(bob, room, original)):
        replacement = bundled(event)["m.replace"]
        assert replacement["event_id"] == latest, replacement
        assert replacement["sender"] == alice.user_id
        assert replacement["content"]["m.new_content"]["body"] == "I like tea"
        assert replacement["content"]["m.relates_to"] == {
            "rel_type": "m.replace",
            "event_id": original,
        }
        # The original content is served unchanged.
        assert event["content"]["body"] == "I like cake"
    # An edit by someone else alone is not bundled.
    other = send(alice, room, "untouched")
    edit(bob, room, other, "vandalised")
    assert "m.replace" not in bundled(get_event(alice, room, other))


def test_redacted_original_has_no_edit_bundled(alice: Client, bob: Client, room: str) -> None:
    original = send(alice, room, "oops")
    edit(alice, room, original, "oops, fixed")
    resp = alice.put(f"rooms/{q(room)}/redact/{q(original)}/{secrets.token_hex(4)}", {})
    assert resp.status == 200, resp
    assert "m.replace" not in bundled(get_event(bob, room, original))


def test_references_bundled(alice: Client, bob: Client, room: str) -> None:
    target = send(alice, room, "see this")
    first = reference(bob, room, target)
    second = reference(alice, room, target)
    for event in (get_event(bob, room, target), from_messages(bob, room, target)):
        assert bundled(event)["m.reference"] == {
            "chunk": [{"event_id": first}, {"event_id": second}]
        }, event
    assert relation_ids(bob, room, target, "m.reference") == [second, first]


def test_plain_events_have_no_relations(alice: Client, room: str) -> None:
    event_id = send(alice, room, "lonely")
    assert "m.relations" not in get_event(alice, room, event_id).get("unsigned", {})


def test_state_events_get_no_bundled_aggregations(alice: Client, bob: Client, room: str) -> None:
    resp = alice.put(f"rooms/{q(room)}/state/m.room.topic", {"topic": "a topic"})
    assert resp.status == 200, resp
    topic = resp.body["event_id"]
    reference(bob, room, topic)
    event = get_event(alice, room, topic)
    assert "m.relations" not in event.get("unsigned", {}), event


def from_sync(client: Client, room_id: str, event_id: str, timeline: JsonDict) -> JsonDict:
    """The event as an initial /sync's timeline serves it (relations read with its page)."""
    resp = client.get("sync", params={"filter": json.dumps({"room": {"timeline": timeline}})})
    assert resp.status == 200, resp
    events = resp.body["rooms"]["join"][room_id]["timeline"]["events"]
    found = [e for e in events if e["event_id"] == event_id]
    assert len(found) == 1, [e["event_id"] for e in events]
    return dict(found[0])


def test_aggregations_bundled_in_sync(alice: Client, bob: Client, room: str) -> None:
    """/sync bundles what /messages does: an edit, a thread summary with its latest reply's
    own edit, a reference; for an event on the first page read and for one the timeline
    reached only on a further page (its relations looked up then)."""
    root = send(alice, room, "root")
    fixed = edit(alice, room, root, "root, fixed")
    reply = reply_in_thread(bob, room, root, "typo")
    reply_fixed = edit(bob, room, reply, "reply, fixed")
    ref = reference(bob, room, root)
    for i in range(6):
        send_event(alice, room, "com.example.noise", {"i": i})
    first_page = {"limit": 12}
    # The newest events are noise and bob's: the root comes on a further page, beside
    # first pages whose relations were read with them.
    further_page = {
        "limit": 2, "not_types": ["com.example.noise"], "not_senders": [bob.user_id]
    }  # fmt: skip
    for timeline in (first_page, further_page):
        relations_of_root = bundled(from_sync(alice, room, root, timeline))
        assert relations_of_root["m.replace"]["event_id"] == fixed
        assert [c["event_id"] for c in relations_of_root["m.reference"]["chunk"]] == [ref]
        summary = relations_of_root["m.thread"]
        assert summary["count"] == 1 and summary["latest_event"]["event_id"] == reply
        assert bundled(summary["latest_event"])["m.replace"]["event_id"] == reply_fixed
        assert without_ages(relations_of_root) == without_ages(
            bundled(from_messages(alice, room, root))
        )


def without_ages(value: Any) -> Any:
    """``value`` without the ``age`` fields (they move between two requests)."""
    if isinstance(value, dict):
        return {k: without_ages(v) for k, v in value.items() if k != "age"}
    if isinstance(value, list):
        return [without_ages(v) for v in value]
    return value
