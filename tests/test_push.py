"""Push over real HTTP: the push rule API, unread counts in /sync, /notifications, pushers
and delivery to a push gateway (a tiny HTTP server in a thread)."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest

from tests.harness import Client, ServerProcess, db_rows, free_port, join, leave, new_user

JsonDict = dict[str, Any]
HIGHLIGHT = {"set_tweak": "highlight"}
SOUND = {"set_tweak": "sound", "value": "default"}
THREADED = {"room": {"timeline": {"unread_thread_notifications": True}}}


def q(value: str) -> str:
    return quote(value, safe="")


def create_room(client: Client, **body: Any) -> str:
    resp = client.post("createRoom", body)
    assert resp.status == 200, resp
    return str(resp.body["room_id"])


def send(
    client: Client, room_id: str, body: str = "hello", msgtype: str = "m.text", **extra: Any
) -> str:
    resp = client.put(
        f"rooms/{q(room_id)}/send/m.room.message/{secrets.token_hex(8)}",
        {"msgtype": msgtype, "body": body, **extra},
    )
    assert resp.status == 200, resp
    return str(resp.body["event_id"])


def mention(user: Client) -> JsonDict:
    return {"m.mentions": {"user_ids": [user.user_id]}}


def thread_reply(root: str) -> JsonDict:
    return {
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": root},
        }
    }


def receipt(
    client: Client,
    room_id: str,
    event_id: str,
    receipt_type: str = "m.read",
    thread_id: str | None = None,
) -> None:
    body = {} if thread_id is None else {"thread_id": thread_id}
    resp = client.post(f"rooms/{q(room_id)}/receipt/{receipt_type}/{q(event_id)}", body)
    assert resp.status == 200, resp


def sync(client: Client, sync_filter: JsonDict | None = None, **params: str) -> JsonDict:
    if sync_filter is not None:
        params["filter"] = json.dumps(sync_filter)
    resp = client.get("sync", params=params)
    assert resp.status == 200, resp
    return dict(resp.body)


def room_entry(client: Client, room_id: str, sync_filter: JsonDict | None = None) -> JsonDict:
    return dict(sync(client, sync_filter)["rooms"]["join"][room_id])


def unread_of(entry: JsonDict) -> tuple[int, int]:
    counts = entry["unread_notifications"]
    return counts["notification_count"], counts["highlight_count"]


def wait_unread(
    client: Client,
    room_id: str,
    expected: tuple[int, int],
    sync_filter: JsonDict | None = None,
    timeout: float = 5,
) -> JsonDict:
    """Push rules run just after the send returns: poll /sync until the counts (total,
    highlight) are as expected, and fail with the last ones seen."""
    deadline = time.monotonic() + timeout
    while True:
        entry = room_entry(client, room_id, sync_filter)
        if unread_of(entry) == expected or time.monotonic() > deadline:
            assert unread_of(entry) == expected, entry
            return entry
        time.sleep(0.05)


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def notifications(client: Client, **params: Any) -> JsonDict:
    resp = client.get("notifications", params={k: str(v) for k, v in params.items()})
    assert resp.status == 200, resp
    return dict(resp.body)


@pytest.fixture
def carol(server: ServerProcess) -> Client:
    return new_user(server)


@pytest.fixture
def room3(alice: Client, bob: Client, carol: Client) -> str:
    """A public room of alice (creator), bob and carol."""
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    join(carol, room_id)
    return room_id


# Push rules API


def test_default_rules(alice: Client) -> None:
    resp = alice.get("pushrules/")
    assert resp.status == 200, resp
    ruleset = resp.body["global"]
    assert set(ruleset) >= {"override", "content", "room", "sender", "underride"}
    override = {r["rule_id"]: r for r in ruleset["override"]}
    underride = {r["rule_id"]: r for r in ruleset["underride"]}
    assert ruleset["override"][0]["rule_id"] == ".m.rule.master"
    master = override[".m.rule.master"]
    assert master["enabled"] is False and master["default"] is True
    assert master["actions"] == []
    user_mention = override[".m.rule.is_user_mention"]
    assert user_mention["enabled"] is True and user_mention["default"] is True
    assert user_mention["conditions"] == [
        {
            "kind": "event_property_contains",
            "key": "content.m\\.mentions.user_ids",
            "value": alice.user_id,
        }
    ]
    assert HIGHLIGHT in user_mention["actions"] and "notify" in user_mention["actions"]
    for rule_id in (
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ):
        assert rule_id in override, rule_id
    message = underride[".m.rule.message"]
    assert message["actions"] == ["notify"] and message["enabled"] is True
    assert message["conditions"] == [
        {"kind": "event_match", "key": "type", "pattern": "m.room.message"}
    ]
    for rule_id in (
        ".m.rule.call",
        ".m.rule.room_one_to_one",
        ".m.rule.encrypted",
        ".m.rule.encrypted_room_one_to_one",
    ):
        assert rule_id in underride, rule_id
    # Matrix 1.17 removed the body-based mention rules.
    assert ".m.rule.contains_display_name" not in override
    assert ".m.rule.roomnotif" not in override
    assert all(r["rule_id"] != ".m.rule.contains_user_name" for r in ruleset["content"])
    # The same ruleset under /pushrules/global/ and per kind.
    resp = alice.get("pushrules/global/")
    assert resp.status == 200, resp
    assert resp.body == ruleset
    resp = alice.get("pushrules/global/underride/")
    assert resp.status == 200, resp
    assert resp.body == ruleset["underride"]
    resp = alice.get("pushrules/global/override/.m.rule.master")
    assert resp.status == 200, resp
    assert resp.body == master
    assert alice.get("pushrules/", token=False).status == 401


def test_content_rule_put_get_delete(alice: Client) -> None:
    actions = ["notify", {"set_tweak": "sound", "value": "cake"}, HIGHLIGHT]
    resp = alice.put("pushrules/global/content/cake", {"pattern": "cake*lie", "actions": actions})
    assert resp.status == 200, resp
    resp = alice.get("pushrules/global/content/cake")
    assert resp.status == 200, resp
    rule = resp.body
    assert rule["rule_id"] == "cake" and rule["pattern"] == "cake*lie"
    assert rule["actions"] == actions
    assert rule["enabled"] is True and rule["default"] is False
    listed = alice.get("pushrules/").body["global"]["content"]
    assert [r["rule_id"] for r in listed] == ["cake"]
    # Updating replaces the rule in place.
    resp = alice.put("pushrules/global/content/cake", {"pattern": "pie", "actions": ["notify"]})
    assert resp.status == 200, resp
    rule = alice.get("pushrules/global/content/cake").body
    assert rule["pattern"] == "pie" and rule["actions"] == ["notify"]
    resp = alice.delete("pushrules/global/content/cake")
    assert resp.status == 200, resp
    resp = alice.get("pushrules/global/content/cake")
    assert resp.status == 404, resp
    assert resp.body["errcode"] == "M_NOT_FOUND"
    assert alice.delete("pushrules/global/content/cake").status == 404
    assert alice.get("pushrules/").body["global"]["content"] == []


def test_rules_are_per_user(alice: Client, bob: Client) -> None:
    resp = alice.put("pushrules/global/content/mine", {"pattern": "x", "actions": ["notify"]})
    assert resp.status == 200, resp
    assert bob.get("pushrules/global/content/mine").status == 404
    assert bob.delete("pushrules/global/content/mine").status == 404
    assert alice.get("pushrules/global/content/mine").status == 200


def test_override_rule_with_conditions(alice: Client) -> None:
    conditions = [
        {"kind": "event_match", "key": "type", "pattern": "m.room.message"},
        {"kind": "room_member_count", "is": "<=10"},
        {"kind": "event_property_is", "key": "content.m\\.x", "value": True},
    ]
    resp = alice.put(
        "pushrules/global/override/mine", {"conditions": conditions, "actions": ["notify"]}
    )
    assert resp.status == 200, resp
    rule = alice.get("pushrules/global/override/mine").body
    assert rule["conditions"] == conditions
    ids = [r["rule_id"] for r in alice.get("pushrules/").body["global"]["override"]]
    # User overrides come after .m.rule.master and before the other server defaults.
    assert ids[:2] == [".m.rule.master", "mine"]
    assert ids[2] == ".m.rule.suppress_notices"


def test_room_and_sender_rules(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    resp = alice.put(f"pushrules/global/room/{q(room_id)}", {"actions": []})
    assert resp.status == 200, resp
    resp = alice.put(f"pushrules/global/sender/{q(bob.user_id)}", {"actions": ["notify"]})
    assert resp.status == 200, resp
    ruleset = alice.get("pushrules/").body["global"]
    assert [r["rule_id"] for r in ruleset["room"]] == [room_id]
    assert [r["rule_id"] for r in ruleset["sender"]] == [bob.user_id]
    assert alice.put("pushrules/global/room/not-a-room", {"actions": []}).status == 400
    assert alice.put("pushrules/global/sender/not-a-user", {"actions": []}).status == 400


def test_new_rules_go_first_and_before_after_ordering(alice: Client) -> None:
    def put(rule_id: str, **params: str) -> int:
        return alice.put(
            f"pushrules/global/content/{rule_id}",
            {"pattern": rule_id, "actions": ["notify"]},
            params=params,
        ).status

    def order() -> list[str]:
        return [r["rule_id"] for r in alice.get("pushrules/global/content/").body]

    assert put("a") == 200
    assert put("b") == 200
    assert order() == ["b", "a"]  # a new rule is the most important of its kind
    assert put("c", after="a") == 200
    assert order() == ["b", "a", "c"]
    assert put("d", before="a") == 200
    assert order() == ["b", "d", "a", "c"]
    assert put("c", before="b") == 200  # moving an existing rule
    assert order() == ["c", "b", "d", "a"]
    # Both given: the rule goes right before `before`.
    assert put("e", before="a", after="c") == 200
    assert order() == ["c", "b", "d", "e", "a"]
    # Updating without before/after keeps the position.
    assert put("d") == 200
    assert order() == ["c", "b", "d", "e", "a"]


def test_before_after_unknown_rule_is_refused(alice: Client) -> None:
    ok = alice.put("pushrules/global/content/a", {"pattern": "a", "actions": ["notify"]})
    assert ok.status == 200
    # The spec's example for 400 is exactly this: "before/after rule not found".
    resp = alice.put(
        "pushrules/global/content/x",
        {"pattern": "x", "actions": ["notify"]},
        params={"before": "nosuchrule"},
    )
    assert resp.status == 400, resp
    # Rules cannot be placed relative to a server-default rule.
    resp = alice.put(
        "pushrules/global/override/x",
        {"conditions": [], "actions": ["notify"]},
        params={"after": ".m.rule.suppress_notices"},
    )
    assert resp.status == 400, resp
    ids = [r["rule_id"] for r in alice.get("pushrules/").body["global"]["override"]]
    assert "x" not in ids
    assert [r["rule_id"] for r in alice.get("pushrules/global/content/").body] == ["a"]


def test_enabled_and_actions_endpoints(alice: Client) -> None:
    base = "pushrules/global/content/tea"
    assert alice.put(base, {"pattern": "tea", "actions": ["notify"]}).status == 200
    resp = alice.get(base + "/enabled")
    assert resp.status == 200, resp
    assert resp.body == {"enabled": True}
    assert alice.put(base + "/enabled", {"enabled": False}).status == 200
    assert alice.get(base + "/enabled").body == {"enabled": False}
    assert alice.get(base).body["enabled"] is False
    resp = alice.get(base + "/actions")
    assert resp.status == 200, resp
    assert resp.body == {"actions": ["notify"]}
    new_actions = ["notify", {"set_tweak": "sound", "value": "bing"}]
    assert alice.put(base + "/actions", {"actions": new_actions}).status == 200
    assert alice.get(base + "/actions").body == {"actions": new_actions}
    assert alice.get(base).body["actions"] == new_actions
    # Legacy actions are stripped.
    assert alice.put(base + "/actions", {"actions": ["dont_notify"]}).status == 200
    assert alice.get(base + "/actions").body == {"actions": []}
    # Bad bodies.
    assert alice.put(base + "/enabled", {"enabled": "yes"}).status == 400
    assert alice.put(base + "/enabled", {}).status == 400
    assert alice.put(base + "/actions", {"actions": "notify"}).status == 400
    assert alice.put(base + "/actions", {"actions": ["explode"]}).status == 400
    assert alice.get(base + "/enabled").body == {"enabled": False}
    assert alice.get(base + "/actions").body == {"actions": []}


def test_default_rule_enabled_and_actions(alice: Client) -> None:
    master = "pushrules/global/override/.m.rule.master"
    assert alice.put(master + "/enabled", {"enabled": True}).status == 200
    assert alice.get(master + "/enabled").body == {"enabled": True}
    rule = alice.get("pushrules/").body["global"]["override"][0]
    assert rule["rule_id"] == ".m.rule.master"
    assert rule["enabled"] is True and rule["default"] is True
    assert alice.put(master + "/enabled", {"enabled": False}).status == 200
    assert alice.get(master + "/enabled").body == {"enabled": False}
    message = "pushrules/global/underride/.m.rule.message"
    actions = ["notify", HIGHLIGHT]
    assert alice.put(message + "/actions", {"actions": actions}).status == 200
    assert alice.get(message + "/actions").body == {"actions": actions}
    rule = alice.get(message).body
    assert rule["actions"] == actions and rule["default"] is True
    # Changing the attributes of a default rule that does not exist.
    resp = alice.put("pushrules/global/override/.m.rule.nope/enabled", {"enabled": True})
    assert resp.status == 404, resp


def test_push_rule_errors(alice: Client) -> None:
    for path in ("override/.m.rule.master", "underride/.m.rule.message"):
        resp = alice.delete("pushrules/global/" + path)
        assert resp.status == 400, (path, resp)
    assert alice.get("pushrules/global/override/.m.rule.master").status == 200
    # Replacing a server-default rule (or any rule ID starting with '.') is refused.
    resp = alice.put("pushrules/global/override/.m.rule.master", {"actions": [], "conditions": []})
    assert resp.status == 400, resp
    resp = alice.put("pushrules/global/content/.mine", {"pattern": "x", "actions": []})
    assert resp.status == 400, resp
    # Unknown kind.
    resp = alice.put("pushrules/global/sideways/x", {"actions": ["notify"]})
    assert resp.status == 400, resp
    assert alice.get("pushrules/global/sideways/").status == 400
    # Unknown condition kind.
    resp = alice.put(
        "pushrules/global/override/x",
        {"conditions": [{"kind": "com.example.nope"}], "actions": ["notify"]},
    )
    assert resp.status == 400, resp
    assert alice.get("pushrules/global/override/x").status == 404
    # Content rule without a pattern; no actions; unknown action.
    assert alice.put("pushrules/global/content/x", {"actions": ["notify"]}).status == 400
    assert alice.put("pushrules/global/content/x", {"pattern": "x"}).status == 400
    resp = alice.put("pushrules/global/content/x", {"pattern": "x", "actions": ["boom"]})
    assert resp.status == 400, resp
    assert alice.get("pushrules/global/content/x").status == 404
    # Unknown rule.
    for path in ("", "/enabled", "/actions"):
        resp = alice.get("pushrules/global/override/nosuchrule" + path)
        assert resp.status == 404, (path, resp)
        assert resp.body["errcode"] == "M_NOT_FOUND"
    assert (
        alice.put("pushrules/global/override/nosuchrule/enabled", {"enabled": True}).status == 404
    )
    assert alice.put("pushrules/global/override/nosuchrule/actions", {"actions": []}).status == 404
    assert alice.delete("pushrules/global/override/nosuchrule").status == 404


def test_rule_changes_arrive_as_account_data(alice: Client) -> None:
    since = sync(alice)["next_batch"]
    resp = alice.put("pushrules/global/content/news", {"pattern": "news", "actions": ["notify"]})
    assert resp.status == 200, resp

    def push_rules_events() -> list[JsonDict]:
        body = sync(alice, since=since, timeout="1000")
        return [e for e in body["account_data"]["events"] if e["type"] == "m.push_rules"]

    events = poll(push_rules_events, bool)
    assert len(events) == 1, events
    content = events[0]["content"]["global"]
    assert [r["rule_id"] for r in content["content"]] == ["news"]
    assert content["override"][0]["rule_id"] == ".m.rule.master"
    # A change to a default rule is reflected too; and a fresh initial sync sees it.
    since = sync(alice)["next_batch"]
    master = "pushrules/global/override/.m.rule.master/enabled"
    assert alice.put(master, {"enabled": True}).status == 200
    events = poll(push_rules_events, bool)
    assert events and events[0]["content"]["global"]["override"][0]["enabled"] is True
    initial = [e for e in sync(alice)["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert initial and initial[0]["content"]["global"]["override"][0]["enabled"] is True


# Unread counts in /sync


def test_unread_counts_three_person_room(
    alice: Client, bob: Client, carol: Client, room3: str
) -> None:
    entry = room_entry(alice, room3)
    assert unread_of(entry) == (0, 0)  # joins do not notify
    send(bob, room3, "one")
    send(bob, room3, "two")
    wait_unread(alice, room3, (2, 0))
    wait_unread(carol, room3, (2, 0))
    wait_unread(bob, room3, (0, 0))  # your own messages never count
    send(carol, room3, "hey you", **mention(alice))
    wait_unread(alice, room3, (3, 1))
    # The mention is of alice: for bob it is a plain message.
    wait_unread(bob, room3, (1, 0))


def test_notices_do_not_notify(alice: Client, bob: Client, carol: Client, room3: str) -> None:
    send(bob, room3, "bot says hi", msgtype="m.notice")
    send(bob, room3, "beep", msgtype="m.notice", **mention(alice))
    send(bob, room3, "human says hi")
    wait_unread(alice, room3, (1, 0))


def test_receipts_reset_counts(alice: Client, bob: Client, carol: Client, room3: str) -> None:
    first = send(bob, room3, "one")
    send(carol, room3, "two", **mention(alice))
    third = send(bob, room3, "three")
    wait_unread(alice, room3, (3, 1))
    # A receipt marks that event and everything before it read.
    receipt(alice, room3, first)
    wait_unread(alice, room3, (2, 1))
    receipt(alice, room3, third)
    wait_unread(alice, room3, (0, 0))
    # Others' counts are their own (carol's own message marked "one" read for her).
    wait_unread(carol, room3, (1, 0))
    # A private read receipt clears notifications too.
    fourth = send(bob, room3, "four")
    wait_unread(alice, room3, (1, 0))
    receipt(alice, room3, fourth, "m.read.private")
    wait_unread(alice, room3, (0, 0))
    # An older receipt does not bring notifications back.
    receipt(alice, room3, first)
    assert unread_of(room_entry(alice, room3)) == (0, 0)


def test_sending_marks_the_room_read(alice: Client, bob: Client, carol: Client, room3: str) -> None:
    send(bob, room3, "one")
    send(bob, room3, "two", **mention(alice))
    wait_unread(alice, room3, (2, 1))
    send(alice, room3, "I'm here")
    wait_unread(alice, room3, (0, 0))
    # Only what came after counts again.
    send(bob, room3, "three")
    wait_unread(alice, room3, (1, 0))


def test_counts_in_the_same_sync_as_the_event(
    alice: Client, bob: Client, carol: Client, room3: str
) -> None:
    """The spec: the updated count MUST appear in the same /sync response as the event."""
    since = sync(alice)["next_batch"]
    for i in range(5):
        event_id = send(bob, room3, f"message {i}")
        # The event is stored when the send returns, so the next /sync carries it.
        entry = sync(alice, since=since)["rooms"]["join"][room3]
        assert event_id in [e["event_id"] for e in entry["timeline"]["events"]]
        assert unread_of(entry) == (i + 1, 0), (i, entry)


def test_keyword_content_rule_highlights(
    alice: Client, bob: Client, carol: Client, room3: str
) -> None:
    resp = alice.put(
        "pushrules/global/content/lunch",
        {"pattern": "lunch", "actions": ["notify", HIGHLIGHT]},
    )
    assert resp.status == 200, resp
    send(bob, room3, "Who wants LUNCH?")
    wait_unread(alice, room3, (1, 1))
    send(bob, room3, "my lunchbox")  # not a whole word: only .m.rule.message
    wait_unread(alice, room3, (2, 1))
    # carol has no such rule.
    wait_unread(carol, room3, (2, 0))
    # Disabling the rule stops the highlights.
    assert alice.put("pushrules/global/content/lunch/enabled", {"enabled": False}).status == 200
    send(bob, room3, "lunch again")
    wait_unread(alice, room3, (3, 1))


def test_display_name_rule_reads_each_members_own_name(
    alice: Client, bob: Client, carol: Client, room3: str
) -> None:
    """A user's rule on their display name matches their name in the room, and only for
    them (one event is evaluated for all members at once)."""
    for user, name in ((alice, "Zelda"), (carol, "Quincy")):
        resp = user.put(
            f"rooms/{q(room3)}/state/m.room.member/{q(user.user_id or '')}",
            {"membership": "join", "displayname": name},
        )
        assert resp.status == 200, resp
        rule = {"conditions": [{"kind": "contains_display_name"}], "actions": ["notify", HIGHLIGHT]}
        assert user.put("pushrules/global/override/my_name", rule).status == 200
    send(bob, room3, "Zelda, are you there?")
    wait_unread(alice, room3, (1, 1))
    wait_unread(carol, room3, (1, 0))
    send(bob, room3, "and Quincy?")
    wait_unread(alice, room3, (2, 1))
    wait_unread(carol, room3, (2, 1))


def test_one_to_one_rule(alice: Client, bob: Client, carol: Client, room3: str) -> None:
    direct = create_room(alice, preset="private_chat", invite=[bob.user_id])
    join(bob, direct)
    # With .m.rule.message off, only .m.rule.room_one_to_one can notify.
    resp = alice.put("pushrules/global/underride/.m.rule.message/enabled", {"enabled": False})
    assert resp.status == 200, resp
    send(bob, direct, "just us")
    wait_unread(alice, direct, (1, 0))
    send(bob, room3, "three of us")
    send(bob, room3, "marker", **mention(alice))
    wait_unread(alice, room3, (1, 1))
    chunk = notifications(alice)["notifications"]
    by_room = {n["room_id"]: n for n in chunk}
    assert set(by_room) == {direct, room3}
    assert by_room[direct]["actions"] == ["notify", SOUND]


def test_master_rule_silences_everything(
    alice: Client, bob: Client, carol: Client, room3: str
) -> None:
    master = "pushrules/global/override/.m.rule.master/enabled"
    assert alice.put(master, {"enabled": True}).status == 200
    send(bob, room3, "one")
    send(bob, room3, "two", **mention(alice))
    assert alice.put(master, {"enabled": False}).status == 200
    send(bob, room3, "three")
    wait_unread(alice, room3, (1, 0))
    assert [n["event"]["content"]["body"] for n in notifications(alice)["notifications"]] == [
        "three"
    ]


def test_thread_notification_counts(alice: Client, bob: Client, carol: Client, room3: str) -> None:
    root = send(bob, room3, "root")
    send(bob, room3, "in thread", **thread_reply(root))
    reply = send(carol, room3, "also in thread", **mention(alice), **thread_reply(root))
    # Without the filter option, everything is counted together.
    wait_unread(alice, room3, (3, 1))
    entry = wait_unread(alice, room3, (1, 0), THREADED)
    assert entry["unread_thread_notifications"] == {
        root: {"notification_count": 2, "highlight_count": 1}
    }
    # A threaded receipt clears only its thread.
    receipt(alice, room3, reply, thread_id=root)
    entry = wait_unread(alice, room3, (1, 0), THREADED)
    assert (
        entry.get("unread_thread_notifications", {}).get(root, {}).get("notification_count", 0) == 0
    ), entry
    wait_unread(alice, room3, (1, 0))


def test_main_receipt_does_not_clear_threads(
    alice: Client, bob: Client, carol: Client, room3: str
) -> None:
    root = send(bob, room3, "root")
    send(bob, room3, "in thread", **thread_reply(root))
    later = send(bob, room3, "main timeline again")
    entry = wait_unread(alice, room3, (2, 0), THREADED)
    assert entry["unread_thread_notifications"][root]["notification_count"] == 1
    # A receipt for thread "main" covers the main timeline only.
    receipt(alice, room3, later, thread_id="main")
    entry = wait_unread(alice, room3, (0, 0), THREADED)
    assert entry.get("unread_thread_notifications", {}).get(root) == {
        "notification_count": 1,
        "highlight_count": 0,
    }, entry
    # An unthreaded receipt covers everything.
    receipt(alice, room3, later)
    entry = wait_unread(alice, room3, (0, 0), THREADED)
    assert (
        entry.get("unread_thread_notifications", {}).get(root, {}).get("notification_count", 0) == 0
    ), entry


def test_edits_and_reactions_do_not_notify(
    alice: Client, bob: Client, carol: Client, room3: str
) -> None:
    original = send(carol, room3, "first", **mention(alice))
    wait_unread(alice, room3, (1, 1))
    send(
        carol,
        room3,
        "* edited",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    resp = bob.put(
        f"rooms/{q(room3)}/send/m.reaction/{secrets.token_hex(8)}",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": original, "key": "+1"}},
    )
    assert resp.status == 200, resp
    send(bob, room3, "marker")
    wait_unread(alice, room3, (2, 1))


def test_room_mentions_need_permission(
    alice: Client, bob: Client, carol: Client, room3: str
) -> None:
    room_mention = {"m.mentions": {"room": True}}
    send(alice, room3, "@room listen up", **room_mention)  # the creator may
    wait_unread(bob, room3, (1, 1))
    send(carol, room3, "@room me too", **room_mention)  # power 0 < notifications.room 50
    wait_unread(bob, room3, (2, 1))
    send(carol, room3, "not a real mention", **{"m.mentions": {"room": "true"}})
    wait_unread(bob, room3, (3, 1))


def test_invites_notify_the_invitee(alice: Client, bob: Client) -> None:
    # History visible to invitees, so that bob may read his invite before joining.
    room_id = create_room(
        alice,
        preset="private_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "invited"}}
        ],
    )
    resp = alice.post(f"rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    assert resp.status == 200, resp

    def invites() -> list[JsonDict]:
        return [n for n in notifications(bob)["notifications"] if n["room_id"] == room_id]

    found = poll(invites, bool)
    assert len(found) == 1, found
    event = found[0]["event"]
    assert event["type"] == "m.room.member" and event["state_key"] == bob.user_id
    assert event["content"]["membership"] == "invite"
    assert found[0]["actions"] == ["notify", SOUND]


def test_events_related_to_thread_events_count_in_the_thread(
    alice: Client, bob: Client, carol: Client, room3: str
) -> None:
    """Receipts spec: an event whose parent is in a thread is in that thread too."""
    root = send(bob, room3, "root")
    reply = send(bob, room3, "in thread", **thread_reply(root))
    send(
        carol,
        room3,
        "about that reply",
        **{"m.relates_to": {"rel_type": "m.reference", "event_id": reply}},
    )
    entry = wait_unread(alice, room3, (3, 0))
    entry = wait_unread(alice, room3, (1, 0), THREADED)
    assert entry["unread_thread_notifications"] == {
        root: {"notification_count": 2, "highlight_count": 0}
    }, entry


# GET /notifications


def test_notifications_list(alice: Client, bob: Client, carol: Client, room3: str) -> None:
    first = send(bob, room3, "one")
    second = send(carol, room3, "two", **mention(alice))
    send(alice, room3, "mine")  # never notified to yourself
    send(bob, room3, "quiet", msgtype="m.notice")
    third = send(bob, room3, "three")
    wait_unread(alice, room3, (1, 0))

    def listed() -> JsonDict:
        return notifications(alice)

    body = poll(listed, lambda b: len(b["notifications"]) >= 3)
    chunk = body["notifications"]
    assert [n["event"]["event_id"] for n in chunk] == [third, second, first]  # newest first
    for n in chunk:
        assert n["room_id"] == room3
        assert isinstance(n["ts"], int) and n["ts"] > 0
        assert "notify" in n["actions"]
        assert n["event"]["room_id"] == room3
    assert [n["read"] for n in chunk] == [False, True, True]  # alice's message read them
    assert HIGHLIGHT in chunk[1]["actions"]
    assert chunk[1]["event"]["content"]["body"] == "two"
    # only=highlight
    highlights = notifications(alice, only="highlight")["notifications"]
    assert [n["event"]["event_id"] for n in highlights] == [second]
    # Pagination.
    page = notifications(alice, limit=2)
    assert [n["event"]["event_id"] for n in page["notifications"]] == [third, second]
    assert "next_token" in page
    rest = notifications(alice, limit=2, **{"from": page["next_token"]})
    assert [n["event"]["event_id"] for n in rest["notifications"]] == [first]
    assert "next_token" not in rest
    # A receipt marks the rest read.
    receipt(alice, room3, third)
    assert all(n["read"] for n in notifications(alice)["notifications"])
    # Others see only their own.
    assert all(n["event"]["sender"] != bob.user_id for n in notifications(bob)["notifications"])
    assert alice.get("notifications", params={"from": "bogus"}).status == 400


def stored_notifications(server: ServerProcess, event_id: str) -> tuple[int, list[Any]]:
    """(shared rows, [(user, notify)] own rows) stored for one event."""
    shared = db_rows(server, "SELECT COUNT(*) FROM event_notifications WHERE event_id = ?",
                     (event_id,))  # fmt: skip
    own = db_rows(server, "SELECT user_id, notify FROM event_push_actions WHERE event_id = ? "
                  "ORDER BY user_id", (event_id,))  # fmt: skip
    return int(shared[0][0]), [tuple(row) for row in own]


def test_a_room_shares_one_notification_row_and_members_who_differ_keep_their_own(
    server: ServerProcess, alice: Client, bob: Client, carol: Client, room3: str
) -> None:
    """The default rules give every member the same answer: it is stored once per event,
    whatever the room's size. Only members whose answer differs have rows of their own."""
    dave = new_user(server)
    join(dave, room3)
    # carol mutes the room (a room rule without actions).
    resp = carol.put(f"pushrules/global/room/{q(room3)}", {"actions": []})
    assert resp.status == 200, resp
    plain = send(bob, room3, "hello all")
    wait_unread(alice, room3, (1, 0))
    wait_unread(dave, room3, (1, 0))
    wait_unread(carol, room3, (0, 0))  # muted: the shared notification is not hers
    wait_unread(bob, room3, (0, 0))  # the sender's own
    assert stored_notifications(server, plain) == (1, [(carol.user_id, 0)])
    # A mention of carol goes past her room rule (mentions are overrides).
    mentioned = send(bob, room3, "carol?", **mention(carol))
    wait_unread(carol, room3, (1, 1))
    wait_unread(alice, room3, (2, 0))
    assert stored_notifications(server, mentioned) == (1, [(carol.user_id, 1)])
    assert [n["event"]["event_id"] for n in notifications(carol)["notifications"]] == [mentioned]
    assert [n["event"]["event_id"] for n in notifications(dave)["notifications"]] == [
        mentioned, plain,
    ]  # fmt: skip
    assert notifications(bob)["notifications"] == []
    # A receipt reads the shared notifications for that member only.
    receipt(dave, room3, mentioned)
    wait_unread(dave, room3, (0, 0))
    wait_unread(alice, room3, (2, 0))


def test_shared_notifications_follow_membership(
    server: ServerProcess, alice: Client, bob: Client, carol: Client, room3: str
) -> None:
    """A member is notified of what came while they were joined: not of what came before
    they joined, nor while they were away."""
    dave = new_user(server)
    before = send(bob, room3, "before dave")
    join(dave, room3)
    wait_unread(dave, room3, (0, 0))
    first = send(bob, room3, "welcome dave")
    wait_unread(dave, room3, (1, 0))
    leave(dave, room3)
    away = send(bob, room3, "while dave is away")
    join(dave, room3)
    back = send(bob, room3, "welcome back")
    wait_unread(dave, room3, (1, 0))  # his rejoin read everything before it
    listed = [n["event"]["event_id"] for n in notifications(dave)["notifications"]]
    assert listed == [back, first]
    assert before not in listed and away not in listed
    # alice was there throughout: all four, shared.
    listed = [n["event"]["event_id"] for n in notifications(alice)["notifications"]]
    assert listed == [back, away, first, before]


# Pushers


def pusher_body(url: str, pushkey: str | None = None, **extra: Any) -> JsonDict:
    body = {
        "pushkey": pushkey or "pk-" + secrets.token_hex(6),
        "kind": "http",
        "app_id": "org.example.app",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "profile_tag": "tag1",
        "lang": "en",
        "data": {"url": url},
    }
    body.update(extra)
    return body


def pushers(client: Client) -> list[JsonDict]:
    resp = client.get("pushers")
    assert resp.status == 200, resp
    return list(resp.body["pushers"])


def test_pusher_validation(alice: Client) -> None:
    good = pusher_body("https://push.example.org/_matrix/push/v1/notify")
    bad_bodies: list[JsonDict] = [
        dict(good, data={"url": "ftp://push.example.org/_matrix/push/v1/notify"}),
        dict(good, data={"url": "file:///etc/passwd"}),
        dict(good, data={"url": "not a url"}),
        dict(good, data={"url": "https://push.example.org:99999/notify"}),  # no such port
        dict(good, data={"url": "http://[::1/notify"}),  # urllib raises on this one
        dict(good, data={}),
        dict(good, data="https://push.example.org/"),
        dict(good, kind="carrier-pigeon"),
    ]
    for field in ("pushkey", "app_id", "app_display_name", "device_display_name", "lang", "data"):
        bad_bodies.append({k: v for k, v in good.items() if k != field})
    for body in bad_bodies:
        resp = alice.post("pushers/set", body)
        assert resp.status == 400, (body, resp)
        assert resp.body["errcode"] in ("M_MISSING_PARAM", "M_INVALID_PARAM", "M_BAD_JSON"), resp
    assert pushers(alice) == []


def test_pusher_set_list_delete(alice: Client, bob: Client) -> None:
    url = "https://push.example.org/_matrix/push/v1/notify"
    body = pusher_body(url, data={"url": url, "format": "event_id_only"})
    assert alice.post("pushers/set", body).status == 200
    listed = pushers(alice)
    assert len(listed) == 1
    pusher = listed[0]
    for key in (
        "pushkey",
        "kind",
        "app_id",
        "app_display_name",
        "device_display_name",
        "profile_tag",
        "lang",
    ):
        assert pusher[key] == body[key], key
    assert pusher["data"]["url"] == url and pusher["data"]["format"] == "event_id_only"
    assert pushers(bob) == []
    # Setting it again updates it rather than adding one.
    assert alice.post("pushers/set", dict(body, device_display_name="Tablet")).status == 200
    listed = pushers(alice)
    assert len(listed) == 1 and listed[0]["device_display_name"] == "Tablet"
    # A second pushkey is a second pusher.
    other = pusher_body(url)
    assert alice.post("pushers/set", other).status == 200
    assert {p["pushkey"] for p in pushers(alice)} == {body["pushkey"], other["pushkey"]}
    # kind null deletes (only pushkey and app_id needed).
    resp = alice.post(
        "pushers/set", {"pushkey": body["pushkey"], "app_id": body["app_id"], "kind": None}
    )
    assert resp.status == 200, resp
    assert [p["pushkey"] for p in pushers(alice)] == [other["pushkey"]]
    assert alice.get("pushers", token=False).status == 401


def test_pusher_append(alice: Client, bob: Client) -> None:
    url = "https://push.example.org/_matrix/push/v1/notify"
    body = pusher_body(url)
    assert alice.post("pushers/set", body).status == 200
    # Without append, the same app_id/pushkey for another user replaces it.
    assert bob.post("pushers/set", body).status == 200
    assert pushers(alice) == []
    assert [p["pushkey"] for p in pushers(bob)] == [body["pushkey"]]
    # With append, both keep it.
    assert alice.post("pushers/set", dict(body, append=True)).status == 200
    assert [p["pushkey"] for p in pushers(alice)] == [body["pushkey"]]
    assert [p["pushkey"] for p in pushers(bob)] == [body["pushkey"]]


class Gateway:
    """A push gateway on a free loopback port: records each POST and answers with the
    next status in ``statuses`` (then 200); ``rejected`` pushkeys are reported back."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.requests: list[tuple[float, str, JsonDict]] = []
        self.statuses = list(statuses or [])
        self.rejected: list[str] = []
        self.redirect_to: str | None = None  # answer 303 ("see other") to there instead
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # only a followed redirect would come as a GET
                with gateway.lock:
                    gateway.requests.append((time.monotonic(), self.path, {"GET": True}))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"unparsable": raw.decode(errors="replace")}
                with gateway.lock:
                    gateway.requests.append((time.monotonic(), self.path, body))
                    status = gateway.statuses.pop(0) if gateway.statuses else 200
                    rejected = list(gateway.rejected)
                reply = json.dumps({"rejected": rejected} if status == 200 else {}).encode()
                if gateway.redirect_to is not None:
                    status, reply = 303, b"{}"
                self.send_response(status)
                if gateway.redirect_to is not None:
                    self.send_header("Location", gateway.redirect_to)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/_matrix/push/v1/notify"

    def for_event(self, event_id: str) -> list[tuple[float, str, JsonDict]]:
        with self.lock:
            return [
                r for r in self.requests if r[2].get("notification", {}).get("event_id") == event_id
            ]

    def wait_for(self, event_id: str, count: int = 1, timeout: float = 5) -> list[Any]:
        return list(poll(lambda: self.for_event(event_id), lambda r: len(r) >= count, timeout))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def gateway_factory() -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def factory(statuses: list[int] | None = None) -> Gateway:
        gateway = Gateway(statuses)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        gateway.close()


def test_push_delivered_to_gateway(
    alice: Client, bob: Client, carol: Client, room3: str, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory()
    body = pusher_body(gateway.url, data={"url": gateway.url, "extra": "kept"})
    assert alice.post("pushers/set", body).status == 200
    own = send(alice, room3, "my own message")
    event_id = send(bob, room3, "ping", **mention(alice))
    received = gateway.wait_for(event_id)
    assert len(received) == 1, gateway.requests
    _, path, request = received[0]
    assert path == "/_matrix/push/v1/notify"
    notification = request["notification"]
    assert notification["event_id"] == event_id
    assert notification["room_id"] == room3
    assert notification["type"] == "m.room.message"
    assert notification["sender"] == bob.user_id
    assert notification["counts"]["unread"] == 1
    assert notification["content"]["body"] == "ping"
    assert notification.get("prio") == "high"  # a highlight
    device = notification["devices"][0]
    assert device["pushkey"] == body["pushkey"]
    assert device["app_id"] == body["app_id"]
    assert device["data"] == {"extra": "kept"}  # the pusher's data minus the url
    assert device["tweaks"].get("highlight") is True
    assert device["tweaks"].get("sound") == "default"
    # Nothing for alice's own message, nor for bob's notices.
    notice = send(bob, room3, "notice", msgtype="m.notice")
    plain = send(bob, room3, "plain")
    received = gateway.wait_for(plain)
    assert received[0][2]["notification"]["counts"]["unread"] == 2
    assert received[0][2]["notification"]["devices"][0]["tweaks"] == {}
    assert gateway.for_event(own) == [] and gateway.for_event(notice) == []


def test_event_id_only_format(
    alice: Client, bob: Client, carol: Client, room3: str, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory()
    body = pusher_body(gateway.url, data={"url": gateway.url, "format": "event_id_only"})
    assert alice.post("pushers/set", body).status == 200
    event_id = send(bob, room3, "secret words")
    received = gateway.wait_for(event_id)
    assert received, gateway.requests
    notification = received[0][2]["notification"]
    assert notification["event_id"] == event_id and notification["room_id"] == room3
    assert "content" not in notification
    assert notification["devices"][0]["data"] == {"format": "event_id_only"}


def test_gateway_error_is_retried(
    alice: Client, bob: Client, carol: Client, room3: str, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory([500])
    assert alice.post("pushers/set", pusher_body(gateway.url)).status == 200
    event_id = send(bob, room3, "try again")
    received = gateway.wait_for(event_id, count=2, timeout=6)
    assert len(received) == 2, gateway.requests
    first, second = received[0][0], received[1][0]
    assert 0.5 <= second - first <= 4, second - first  # the retry comes after about a second
    assert received[1][2]["notification"]["event_id"] == event_id
    time.sleep(0.5)
    assert len(gateway.for_event(event_id)) == 2  # the 200 ends the retries


def test_rejected_pushkey_removes_the_pusher(
    alice: Client, bob: Client, carol: Client, room3: str, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory()
    body = pusher_body(gateway.url)
    gateway.rejected.append(body["pushkey"])
    assert alice.post("pushers/set", body).status == 200
    event_id = send(bob, room3, "to a dead phone")
    assert gateway.wait_for(event_id)
    assert poll(lambda: pushers(alice), lambda p: p == []) == []


def test_dead_gateway_never_slows_sends(
    alice: Client, bob: Client, carol: Client, room3: str, gateway_factory: Callable[..., Gateway]
) -> None:
    closed_url = f"http://127.0.0.1:{free_port()}/_matrix/push/v1/notify"
    # A gateway that accepts the connection and never answers.
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(16)
    try:
        hanging_url = f"http://127.0.0.1:{hanging.getsockname()[1]}/_matrix/push/v1/notify"
        assert alice.post("pushers/set", pusher_body(closed_url)).status == 200
        assert carol.post("pushers/set", pusher_body(hanging_url)).status == 200
        for i in range(3):
            start = time.monotonic()
            resp = bob.put(
                f"rooms/{q(room3)}/send/m.room.message/dead{i}",
                {"msgtype": "m.text", "body": f"still fine {i}"},
            )
            elapsed = time.monotonic() - start
            assert resp.status == 200, resp
            assert elapsed < 1.5, elapsed
        # Counts are unaffected.
        wait_unread(alice, room3, (3, 0))
        wait_unread(carol, room3, (3, 0))
        start = time.monotonic()
        assert alice.get("pushers").status == 200
        assert time.monotonic() - start < 1.5
    finally:
        hanging.close()


def test_push_gateway_on_a_blacklisted_address_is_never_contacted(
    server_factory: Callable[..., ServerProcess], gateway_factory: Callable[..., Gateway]
) -> None:
    """A pusher URL is the client's choice; with loopback blacklisted (the default), a
    gateway there is never called, however often events notify."""
    from tests.harness import create_room, join, new_user

    server = server_factory({"federation": {"ip_range_blacklist": ["127.0.0.0/8"]}})
    alice, bob = new_user(server), new_user(server)
    room_id = create_room(alice)
    join(bob, room_id)
    gateway = gateway_factory()
    assert alice.post("pushers/set", pusher_body(gateway.url)).status == 200
    event_id = send(bob, room_id, "ping", **mention(alice))
    import time

    time.sleep(1.5)
    assert not any(event_id in str(r) for r in gateway.requests)
    assert "Not pushing to 127.0.0.1" in server.log_text()


def test_push_gateway_redirects_are_not_followed(
    alice: Client, bob: Client, carol: Client, room3: str, gateway_factory: Callable[..., Gateway]
) -> None:
    """A gateway (the client's choice of URL) cannot send the server's request on to an
    address of its choosing: a redirect is the end of that notification, not retried."""
    inside = gateway_factory()
    outside = gateway_factory()
    outside.redirect_to = inside.url
    assert alice.post("pushers/set", pusher_body(outside.url)).status == 200
    event_id = send(bob, room3, "ping", **mention(alice))
    assert len(outside.wait_for(event_id)) == 1
    later = send(bob, room3, "ping again", **mention(alice))
    assert len(outside.wait_for(later)) == 1  # the first was not retried in between
    assert len(outside.for_event(event_id)) == 1
    assert inside.requests == []
