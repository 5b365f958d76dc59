"""Rooms over real HTTP: creation in every room version, membership, sending, state,
redaction, limits, aliases, the directory, history reads and pagination."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from tests.harness import Client, Response, ServerProcess, new_user
from tests.test_shared_secret_registration import shared_secret_register

ALL_VERSIONS = [str(v) for v in range(1, 13)]


def q(value: str) -> str:
    """Percent-encode one path segment: event IDs may contain '/' and '+'."""
    return quote(value, safe="")


def create_room(client: Client, **body: Any) -> str:
    resp = client.post("createRoom", body)
    assert resp.status == 200, resp
    return str(resp.body["room_id"])


def send(client: Client, room_id: str, body: str, txn_id: str | None = None) -> str:
    txn_id = txn_id or secrets.token_hex(8)
    resp = client.put(
        f"rooms/{q(room_id)}/send/m.room.message/{q(txn_id)}",
        {"msgtype": "m.text", "body": body},
    )
    assert resp.status == 200, resp
    return str(resp.body["event_id"])


def join(client: Client, room: str) -> Response:
    return client.post(f"join/{q(room)}", {})


def state(client: Client, room_id: str) -> dict[tuple[str, str | None], dict[str, Any]]:
    resp = client.get(f"rooms/{q(room_id)}/state")
    assert resp.status == 200, resp
    return {(e["type"], e["state_key"]): e for e in resp.body}


def get_event(client: Client, room_id: str, event_id: str) -> Response:
    return client.get(f"rooms/{q(room_id)}/event/{q(event_id)}")


def messages(client: Client, room_id: str, **params: Any) -> Response:
    return client.get(f"rooms/{q(room_id)}/messages", params={k: str(v) for k, v in params.items()})


def timeline(client: Client, room_id: str) -> list[dict[str, Any]]:
    """The whole visible timeline, oldest first."""
    resp = messages(client, room_id, dir="f", limit=1000)
    assert resp.status == 200, resp
    return list(resp.body["chunk"])


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


def membership_of(client: Client, room_id: str, user_id: str | None) -> str | None:
    event = state(client, room_id).get(("m.room.member", user_id))
    return event["content"]["membership"] if event else None


# Creating rooms


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_room_every_version(alice: Client, version: str) -> None:
    server_name = alice.server.server_name
    room_id = create_room(alice, room_version=version, name="Room " + version, topic="T" + version)
    if version == "12":
        assert room_id.startswith("!") and ":" not in room_id
    else:
        assert room_id.startswith("!") and room_id.endswith(":" + server_name)
    current = state(alice, room_id)
    create = current[("m.room.create", "")]
    assert create["content"]["room_version"] == version
    assert create["sender"] == alice.user_id
    assert current[("m.room.name", "")]["content"] == {"name": "Room " + version}
    assert current[("m.room.topic", "")]["content"] == {"topic": "T" + version}
    assert current[("m.room.member", alice.user_id)]["content"]["membership"] == "join"
    for event in current.values():
        # Client events always carry their room ID (even v12 create events).
        assert event.get("room_id") == room_id, event
        assert "signatures" not in event and "hashes" not in event

    # Messages round-trip through GET /event with the ID percent-encoded.
    event_id = send(alice, room_id, "hello v" + version)
    if version in ("1", "2"):
        assert event_id.endswith(":" + server_name)
    else:
        assert ":" not in event_id
    if int(version) >= 4:
        assert "/" not in event_id and "+" not in event_id
    resp = get_event(alice, room_id, event_id)
    assert resp.status == 200, resp
    assert resp.body["event_id"] == event_id
    assert resp.body["content"]["body"] == "hello v" + version
    assert resp.body["room_id"] == room_id


def test_default_room_version_from_capabilities(alice: Client) -> None:
    resp = alice.get("capabilities")
    assert resp.status == 200
    versions = resp.body["capabilities"]["m.room_versions"]
    assert set(ALL_VERSIONS) <= set(versions["available"])
    assert versions["available"]["12"] == "stable"
    default = versions["default"]
    assert default in versions["available"]
    room_id = create_room(alice)
    assert state(alice, room_id)[("m.room.create", "")]["content"]["room_version"] == default


def test_unsupported_room_version(alice: Client) -> None:
    for bad in ("999", "1.5", ""):
        resp = alice.post("createRoom", {"room_version": bad})
        assert resp.status == 400, (bad, resp)
        assert resp.body["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"


def test_presets(alice: Client, bob: Client) -> None:
    public = create_room(alice, preset="public_chat")
    current = state(alice, public)
    assert current[("m.room.join_rules", "")]["content"]["join_rule"] == "public"
    assert current[("m.room.history_visibility", "")]["content"]["history_visibility"] == "shared"
    guest = current.get(("m.room.guest_access", ""))
    assert guest is None or guest["content"]["guest_access"] == "forbidden"
    private = create_room(alice, preset="private_chat")
    current = state(alice, private)
    assert current[("m.room.join_rules", "")]["content"]["join_rule"] == "invite"
    assert current[("m.room.history_visibility", "")]["content"]["history_visibility"] == "shared"
    assert current[("m.room.guest_access", "")]["content"]["guest_access"] == "can_join"
    # visibility=public without a preset means public_chat
    by_visibility = create_room(alice, visibility="public")
    current = state(alice, by_visibility)
    assert current[("m.room.join_rules", "")]["content"]["join_rule"] == "public"
    trusted = create_room(
        alice, preset="trusted_private_chat", invite=[bob.user_id], room_version="10"
    )
    current = state(alice, trusted)
    assert current[("m.room.join_rules", "")]["content"]["join_rule"] == "invite"
    assert current[("m.room.power_levels", "")]["content"]["users"][bob.user_id] == 100
    # From v12 invitees become additional creators (SHOULD), or at least get creator-level power.
    trusted = create_room(alice, preset="trusted_private_chat", invite=[bob.user_id])
    current = state(alice, trusted)
    creators = current[("m.room.create", "")]["content"].get("additional_creators", [])
    users = current[("m.room.power_levels", "")]["content"]["users"]
    assert (bob.user_id in creators and bob.user_id not in users) or users[bob.user_id] == 100
    assert membership_of(alice, trusted, bob.user_id) == "invite"
    resp = alice.post("createRoom", {"preset": "no_such_preset"})
    assert resp.status == 400


def test_creation_content(alice: Client) -> None:
    room_id = create_room(
        alice,
        room_version="10",
        creation_content={
            "m.federate": False,
            "type": "m.space",
            "creator": "@someone:else.example",
            "room_version": "1",
        },
    )
    content = state(alice, room_id)[("m.room.create", "")]["content"]
    assert content["m.federate"] is False
    assert content["type"] == "m.space"
    # The server overwrites creator and room_version.
    assert content["creator"] == alice.user_id
    assert content["room_version"] == "10"


def test_restricted_join_rule(server: ServerProcess, alice: Client, bob: Client) -> None:
    carol = new_user(server)
    space = create_room(alice, preset="public_chat")
    restricted = create_room(
        alice,
        room_version="10",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}],
                },
            }
        ],
    )
    assert join(bob, space).status == 200
    resp = join(bob, restricted)
    assert resp.status == 200, resp
    member = state(alice, restricted)[("m.room.member", bob.user_id)]
    assert member["content"]["join_authorised_via_users_server"] == alice.user_id
    resp = join(carol, restricted)
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"


def test_room_alias_name(alice: Client, bob: Client) -> None:
    localpart = "alias" + secrets.token_hex(4)
    resp = alice.post("createRoom", {"room_alias_name": localpart, "preset": "public_chat"})
    assert resp.status == 200, resp
    room_id = resp.body["room_id"]
    alias = f"#{localpart}:{alice.server.server_name}"
    resolved = bob.get(f"directory/room/{q(alias)}")
    assert resolved.status == 200, resolved
    assert resolved.body["room_id"] == room_id
    assert alice.server.server_name in resolved.body["servers"]
    canonical = state(alice, room_id)[("m.room.canonical_alias", "")]
    assert canonical["content"]["alias"] == alias
    taken = bob.post("createRoom", {"room_alias_name": localpart})
    assert taken.status == 400
    assert taken.body["errcode"] == "M_ROOM_IN_USE"
    # join by alias
    joined = join(bob, alias)
    assert joined.status == 200, joined
    assert joined.body["room_id"] == room_id
    assert membership_of(alice, room_id, bob.user_id) == "join"


def test_invite_list_and_join(alice: Client, bob: Client, server: ServerProcess) -> None:
    carol = new_user(server)
    room_id = create_room(alice, invite=[bob.user_id, carol.user_id])
    assert membership_of(alice, room_id, bob.user_id) == "invite"
    assert membership_of(alice, room_id, carol.user_id) == "invite"
    resp = bob.post(f"rooms/{q(room_id)}/join", {})
    assert resp.status == 200, resp
    assert resp.body["room_id"] == room_id
    assert join(carol, room_id).status == 200
    resp = alice.get(f"rooms/{q(room_id)}/joined_members")
    assert set(resp.body["joined"]) == {alice.user_id, bob.user_id, carol.user_id}


@pytest.mark.parametrize("version", ["10", "12"])
def test_power_level_override_and_initial_state(alice: Client, bob: Client, version: str) -> None:
    # From room version 12 the creator has infinite power and may not be listed in users.
    users = {bob.user_id: 42} if version == "12" else {alice.user_id: 100, bob.user_id: 42}
    room_id = create_room(
        alice,
        room_version=version,
        power_level_content_override={"events_default": 10, "users": users},
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
            {"type": "com.example.custom", "state_key": "k1", "content": {"x": 1}},
            {"type": "m.room.guest_access", "content": {"guest_access": "forbidden"}},
        ],
    )
    current = state(alice, room_id)
    power = current[("m.room.power_levels", "")]["content"]
    assert power["events_default"] == 10
    assert power["users"] == users
    assert "ban" in power and "state_default" in power  # the rest of the defaults remain
    visibility = current[("m.room.history_visibility", "")]["content"]
    assert visibility == {"history_visibility": "joined"}
    assert current[("com.example.custom", "k1")]["content"] == {"x": 1}
    assert current[("m.room.guest_access", "")]["content"] == {"guest_access": "forbidden"}


def test_join_invite_only_without_invite(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="private_chat")
    resp = join(bob, room_id)
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    assert membership_of(alice, room_id, bob.user_id) is None


def test_join_unknown_room_and_alias(alice: Client) -> None:
    resp = join(alice, f"!nosuchroom:{alice.server.server_name}")
    assert resp.status == 404, resp
    resp = join(alice, f"#nosuchalias{secrets.token_hex(3)}:{alice.server.server_name}")
    assert resp.status == 404, resp
    assert resp.body["errcode"] == "M_NOT_FOUND"


def test_leave(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="public_chat")
    assert join(bob, room_id).status == 200
    assert room_id in bob.get("joined_rooms").body["joined_rooms"]
    resp = bob.post(f"rooms/{q(room_id)}/leave", {"reason": "bye"})
    assert resp.status == 200, resp
    assert room_id not in bob.get("joined_rooms").body["joined_rooms"]
    member = state(alice, room_id)[("m.room.member", bob.user_id)]
    assert member["content"]["membership"] == "leave"
    assert member["content"].get("reason") == "bye"
    # No longer in the room: can't send.
    resp = bob.put(f"rooms/{q(room_id)}/send/m.room.message/t1", {"body": "x", "msgtype": "m.text"})
    assert resp.status == 403
    # Leaving as an invitee rejects the invite; an invite-only room then stays closed.
    private = create_room(alice, preset="private_chat", invite=[bob.user_id])
    assert bob.post(f"rooms/{q(private)}/leave", {}).status == 200
    assert membership_of(alice, private, bob.user_id) == "leave"
    assert join(bob, private).status == 403


def test_invite_kick_ban_unban(alice: Client, bob: Client, server: ServerProcess) -> None:
    carol, dave = new_user(server), new_user(server)
    room_id = create_room(alice, preset="public_chat")
    assert join(bob, room_id).status == 200
    assert join(carol, room_id).status == 200

    # A non-member can't invite.
    resp = dave.post(f"rooms/{q(room_id)}/invite", {"user_id": dave.user_id})
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    outsider = new_user(server)
    resp = outsider.post(f"rooms/{q(room_id)}/invite", {"user_id": dave.user_id})
    assert resp.status == 403, resp

    # A member without power can't kick or ban.
    for action in ("kick", "ban"):
        resp = bob.post(f"rooms/{q(room_id)}/{action}", {"user_id": carol.user_id})
        assert resp.status == 403, (action, resp)
        assert resp.body["errcode"] == "M_FORBIDDEN"
    assert membership_of(alice, room_id, carol.user_id) == "join"

    # Kick: carol leaves, and may rejoin a public room.
    resp = alice.post(f"rooms/{q(room_id)}/kick", {"user_id": carol.user_id, "reason": "r"})
    assert resp.status == 200, resp
    member = state(alice, room_id)[("m.room.member", carol.user_id)]
    assert member["content"]["membership"] == "leave"
    assert member["sender"] == alice.user_id
    assert join(carol, room_id).status == 200

    # Ban: carol can't rejoin until unbanned.
    resp = alice.post(f"rooms/{q(room_id)}/ban", {"user_id": carol.user_id})
    assert resp.status == 200, resp
    assert membership_of(alice, room_id, carol.user_id) == "ban"
    resp = join(carol, room_id)
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    # bob can't unban
    resp = bob.post(f"rooms/{q(room_id)}/unban", {"user_id": carol.user_id})
    assert resp.status == 403, resp
    assert membership_of(alice, room_id, carol.user_id) == "ban"
    resp = alice.post(f"rooms/{q(room_id)}/unban", {"user_id": carol.user_id})
    assert resp.status == 200, resp
    assert membership_of(alice, room_id, carol.user_id) == "leave"
    assert join(carol, room_id).status == 200

    # Inviting someone already joined is refused; so is kicking or banning a higher power.
    resp = alice.post(f"rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    assert resp.status == 403, resp
    resp = bob.post(f"rooms/{q(room_id)}/kick", {"user_id": alice.user_id})
    assert resp.status == 403, resp
    assert membership_of(alice, room_id, alice.user_id) == "join"
    # A second m.room.create is refused.
    resp = alice.put(f"rooms/{q(room_id)}/state/m.room.create", {"room_version": "1"})
    assert resp.status == 403, resp

    # Invite into an invite-only room lets the invitee in.
    private = create_room(alice, preset="private_chat")
    assert join(dave, private).status == 403
    resp = alice.post(f"rooms/{q(private)}/invite", {"user_id": dave.user_id})
    assert resp.status == 200, resp
    assert join(dave, private).status == 200


def test_unban_lets_banned_user_back_into_invite_only_room(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="private_chat", invite=[bob.user_id])
    assert join(bob, room_id).status == 200
    assert alice.post(f"rooms/{q(room_id)}/ban", {"user_id": bob.user_id}).status == 200
    # Even an invite can't override a ban.
    resp = alice.post(f"rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    assert resp.status == 403, resp
    assert alice.post(f"rooms/{q(room_id)}/unban", {"user_id": bob.user_id}).status == 200
    assert alice.post(f"rooms/{q(room_id)}/invite", {"user_id": bob.user_id}).status == 200
    assert join(bob, room_id).status == 200


# Sending and state


def test_send_txn_id_is_idempotent(alice: Client) -> None:
    room_id = create_room(alice)
    first = send(alice, room_id, "once", txn_id="txn-1")
    again = send(alice, room_id, "once", txn_id="txn-1")
    assert first == again
    assert bodies(timeline(alice, room_id)) == ["once"]
    # A different transaction ID is a new event.
    other = send(alice, room_id, "once", txn_id="txn-2")
    assert other != first
    assert bodies(timeline(alice, room_id)) == ["once", "once"]
    # The sender's device sees its transaction ID.
    resp = get_event(alice, room_id, first)
    assert resp.body["unsigned"].get("transaction_id") == "txn-1"


def test_retry_older_than_the_txn_cache_is_still_the_same_event(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """The in-memory cache only saves drafting an event for a quick retry; a retry it no
    longer knows (one entry here, as after a restart) is caught by the database's key."""
    server = server_factory({"caches": {"sizes": {"transaction_ids": 1}}})
    alice = new_user(server)
    room_id = create_room(alice)
    first = send(alice, room_id, "once", txn_id="old-txn")
    send(alice, room_id, "later", txn_id="newer-txn")  # pushes old-txn out of the cache
    again = send(alice, room_id, "once", txn_id="old-txn")
    assert again == first
    assert bodies(timeline(alice, room_id)) == ["once", "later"]
    assert send(alice, room_id, "after", txn_id="third-txn") not in (first, again)
    assert bodies(timeline(alice, room_id)) == ["once", "later", "after"]

    # A redaction, then the user leaves: retries of both, older than the cache, still get
    # their first answers although the user may no longer send or redact; new ones do not.
    path = f"rooms/{q(room_id)}/redact/{q(first)}/redact-txn"
    redaction = alice.put(path, {})
    assert redaction.status == 200
    send(alice, room_id, "pushes the redaction out", txn_id="evicting-txn")
    resp = alice.put(path, {})  # still allowed: drafted again, caught when written
    assert (resp.status, resp.body.get("event_id")) == (200, redaction.body["event_id"])
    assert alice.post(f"rooms/{q(room_id)}/leave", {}).status == 200
    resp = alice.put(f"rooms/{q(room_id)}/send/m.room.message/old-txn", {"body": "once"})
    assert (resp.status, resp.body.get("event_id")) == (200, first)
    resp = alice.put(path, {})
    assert (resp.status, resp.body.get("event_id")) == (200, redaction.body["event_id"])
    resp = alice.put(f"rooms/{q(room_id)}/send/m.room.message/new-txn", {"body": "no"})
    assert resp.status == 403
    resp = alice.put(f"rooms/{q(room_id)}/redact/{q(first)}/another-txn", {})
    assert resp.status in (403, 404)


def test_txn_ids_are_per_room(alice: Client) -> None:
    """A retransmission is the same transaction ID on the same path (spec: "Transaction
    identifiers"); the same ID sent to another room is a new request."""
    room_a = create_room(alice)
    room_b = create_room(alice)
    in_a = send(alice, room_a, "in a", txn_id="shared-txn")
    in_b = send(alice, room_b, "in b", txn_id="shared-txn")
    assert in_b != in_a
    assert bodies(timeline(alice, room_b)) == ["in b"]
    resp = get_event(alice, room_b, in_b)
    assert resp.status == 200, resp
    assert resp.body["room_id"] == room_b


def test_txn_ids_are_per_event_type(alice: Client) -> None:
    room_id = create_room(alice)
    message = send(alice, room_id, "message", txn_id="typed-txn")
    resp = alice.put(f"rooms/{q(room_id)}/send/com.example.other/typed-txn", {"x": 1})
    assert resp.status == 200, resp
    assert resp.body["event_id"] != message
    assert get_event(alice, room_id, resp.body["event_id"]).body["type"] == "com.example.other"


def test_redaction_txn_id_distinct_from_send(alice: Client) -> None:
    room_id = create_room(alice)
    message = send(alice, room_id, "message", txn_id="reused-txn")
    resp = alice.put(f"rooms/{q(room_id)}/redact/{q(message)}/reused-txn", {})
    assert resp.status == 200, resp
    assert resp.body["event_id"] != message
    assert get_event(alice, room_id, message).body["content"] == {}


def test_txn_ids_are_per_device(server: ServerProcess, alice: Client) -> None:
    other_device = Client(server)
    assert other_device.login(alice.user_id or "").status == 200
    room_id = create_room(alice)
    first = send(alice, room_id, "a", txn_id="same")
    second = send(other_device, room_id, "b", txn_id="same")
    assert first != second
    assert bodies(timeline(alice, room_id)) == ["a", "b"]


def test_only_the_sending_device_sees_its_transaction_id(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """Whether the answer comes from memory (the event sent by this process), from the
    database (the memo holds one event; after a restart), the sending device is shown its
    transaction ID and another device of the same user is not."""
    server = server_factory({"caches": {"sizes": {"event_transactions": 1}}})
    alice = new_user(server)
    other_device = Client(server)
    assert other_device.login(alice.user_id or "").status == 200
    room_id = create_room(alice)
    sent = {send(alice, room_id, f"m{i}", txn_id=f"t{i}"): f"t{i}" for i in range(3)}
    from_other = send(other_device, room_id, "other", txn_id="t-other")

    def shown(client: Client) -> dict[str, str | None]:
        events = client.get("sync").body["rooms"]["join"][room_id]["timeline"]["events"]
        return {e["event_id"]: e["unsigned"].get("transaction_id") for e in events
                if e["type"] == "m.room.message"}  # fmt: skip

    for _ in range(2):
        assert shown(alice) == {**sent, from_other: None}
        assert shown(other_device) == {**dict.fromkeys(sent), from_other: "t-other"}
        assert (
            get_event(alice, room_id, next(iter(sent))).body["unsigned"]["transaction_id"] == "t0"
        )
        server.restart()


def test_put_and_get_state(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="public_chat")
    base = f"rooms/{q(room_id)}/state"
    resp = alice.put(f"{base}/m.room.topic", {"topic": "one"})
    assert resp.status == 200, resp
    first_id = resp.body["event_id"]
    assert alice.get(f"{base}/m.room.topic").body == {"topic": "one"}
    assert alice.get(f"{base}/m.room.topic/").body == {"topic": "one"}
    resp = alice.put(f"{base}/m.room.topic/", {"topic": "two"})
    assert resp.status == 200, resp
    assert resp.body["event_id"] != first_id
    assert alice.get(f"{base}/m.room.topic").body == {"topic": "two"}
    # format=event returns the whole event
    resp = alice.get(f"{base}/m.room.topic", params={"format": "event"})
    assert resp.status == 200
    assert resp.body["type"] == "m.room.topic" and resp.body["state_key"] == ""
    assert resp.body["content"] == {"topic": "two"}
    assert resp.body["unsigned"]["prev_content"] == {"topic": "one"}

    # With a state key, including one that needs escaping.
    key = "a/b c#?é"
    resp = alice.put(f"{base}/com.example.thing/{q(key)}", {"v": 1})
    assert resp.status == 200, resp
    resp = alice.get(f"{base}/com.example.thing/{q(key)}")
    assert resp.status == 200, resp
    assert resp.body == {"v": 1}
    assert state(alice, room_id)[("com.example.thing", key)]["content"] == {"v": 1}
    # Missing state: 404
    resp = alice.get(f"{base}/com.example.thing/other")
    assert resp.status == 404
    assert resp.body["errcode"] == "M_NOT_FOUND"
    resp = alice.get(f"{base}/com.example.nothing")
    assert resp.status == 404

    # A member reads it too; a non-member can't.
    assert join(bob, room_id).status == 200
    assert bob.get(f"{base}/m.room.topic").body == {"topic": "two"}


def test_state_read_forbidden_for_non_member(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="private_chat")
    resp = bob.get(f"rooms/{q(room_id)}/state")
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    resp = bob.get(f"rooms/{q(room_id)}/state/m.room.create")
    assert resp.status == 403, resp


def test_redaction(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="public_chat")
    assert join(bob, room_id).status == 200
    own = send(alice, room_id, "secret")
    bobs = send(bob, room_id, "bob's")

    # bob has no power to redact alice's event
    resp = bob.put(f"rooms/{q(room_id)}/redact/{q(own)}/r1", {"reason": "no"})
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    assert get_event(alice, room_id, own).body["content"]["body"] == "secret"

    resp = alice.put(f"rooms/{q(room_id)}/redact/{q(own)}/r1", {"reason": "oops"})
    assert resp.status == 200, resp
    redaction_id = resp.body["event_id"]
    # idempotent on the transaction ID
    again = alice.put(f"rooms/{q(room_id)}/redact/{q(own)}/r1", {"reason": "oops"})
    assert again.status == 200 and again.body["event_id"] == redaction_id

    for reader in (alice, bob):
        resp = get_event(reader, room_id, own)
        assert resp.status == 200, resp
        assert resp.body["content"] == {}
        assert resp.body["type"] == "m.room.message"
        assert resp.body["sender"] == alice.user_id
        assert resp.body["unsigned"]["redacted_because"]["event_id"] == redaction_id
        events = {e["event_id"]: e for e in timeline(reader, room_id)}
        assert events[own]["content"] == {}
        assert redaction_id in events
        assert events[bobs]["content"]["body"] == "bob's"

    # alice (power 100) may redact bob's event; bob may redact his own.
    resp = alice.put(f"rooms/{q(room_id)}/redact/{q(bobs)}/r2", {})
    assert resp.status == 200, resp
    assert get_event(bob, room_id, bobs).body["content"] == {}
    own_bob = send(bob, room_id, "mine")
    resp = bob.put(f"rooms/{q(room_id)}/redact/{q(own_bob)}/r3", {})
    assert resp.status == 200, resp
    assert get_event(alice, room_id, own_bob).body["content"] == {}


def test_events_are_scoped_to_their_room(alice: Client) -> None:
    room_id = create_room(alice)
    other = create_room(alice)
    resp = alice.put(f"rooms/{q(room_id)}/redact/{q('$nosuchevent')}/r1", {})
    assert resp.status == 404, resp
    elsewhere = send(alice, other, "elsewhere")
    # An event of another room is not found through this room's paths.
    assert get_event(alice, room_id, elsewhere).status == 404
    assert alice.get(f"rooms/{q(room_id)}/context/{q(elsewhere)}").status == 404
    resp = alice.put(f"rooms/{q(room_id)}/redact/{q(elsewhere)}/r2", {})
    assert resp.status == 404, resp
    assert get_event(alice, other, elsewhere).body["content"]["body"] == "elsewhere"


def test_unknown_room_is_404(alice: Client) -> None:
    room_id = f"!nosuchroom{secrets.token_hex(3)}:{alice.server.server_name}"
    r = q(room_id)
    for resp in (
        alice.put(f"rooms/{r}/send/m.room.message/t1", {"msgtype": "m.text", "body": "x"}),
        alice.put(f"rooms/{r}/state/m.room.topic", {"topic": "x"}),
        alice.get(f"rooms/{r}/state"),
        alice.get(f"rooms/{r}/state/m.room.topic"),
        alice.get(f"rooms/{r}/messages"),
    ):
        assert resp.status == 404, resp
        assert resp.body["errcode"] == "M_NOT_FOUND"


def test_type_and_state_key_limits(alice: Client) -> None:
    room_id = create_room(alice)
    r = q(room_id)
    long_type = "t" * 256
    resp = alice.put(f"rooms/{r}/send/{long_type}/t1", {"body": "x"})
    assert resp.status == 400, resp
    resp = alice.put(f"rooms/{r}/state/{long_type}", {"x": 1})
    assert resp.status == 400, resp
    resp = alice.put(f"rooms/{r}/state/com.example.k/{'k' * 256}", {"x": 1})
    assert resp.status == 400, resp
    # Limits are in bytes: 128 two-byte characters are 256 bytes.
    resp = alice.put(f"rooms/{r}/state/com.example.k/{q('é' * 128)}", {"x": 1})
    assert resp.status == 400, resp
    # At the limit is fine.
    resp = alice.put(f"rooms/{r}/state/com.example.k/{'k' * 255}", {"x": 1})
    assert resp.status == 200, resp
    resp = alice.put(f"rooms/{r}/send/{'t' * 255}/t2", {"body": "x"})
    assert resp.status == 200, resp


def test_event_too_large(alice: Client) -> None:
    room_id = create_room(alice)
    resp = alice.put(
        f"rooms/{q(room_id)}/send/m.room.message/big",
        {"msgtype": "m.text", "body": "x" * 70000},
    )
    assert resp.status == 413, resp
    assert resp.body["errcode"] == "M_TOO_LARGE"
    resp = alice.put(f"rooms/{q(room_id)}/state/com.example.big", {"v": "y" * 70000})
    assert resp.status == 413, resp
    assert resp.body["errcode"] == "M_TOO_LARGE"
    assert bodies(timeline(alice, room_id)) == []
    # The room still works afterwards.
    send(alice, room_id, "small")
    assert bodies(timeline(alice, room_id)) == ["small"]


def test_concurrent_sends(server: ServerProcess, alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="public_chat")
    assert join(bob, room_id).status == 200
    per_sender = 6
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(token: str, label: str) -> None:
        try:
            c = Client(server, token)
            barrier.wait(5)
            results[label] = [send(c, room_id, f"{label}{i}") for i in range(per_sender)]
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [
        threading.Thread(target=worker, args=(alice.token, "a")),
        threading.Thread(target=worker, args=(bob.token, "b")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    forwards = [e for e in timeline(alice, room_id) if e["type"] == "m.room.message"]
    resp = messages(alice, room_id, dir="b", limit=1000)
    backwards = [e for e in resp.body["chunk"] if e["type"] == "m.room.message"]
    ids = [e["event_id"] for e in forwards]
    assert ids == [e["event_id"] for e in reversed(backwards)]
    assert sorted(ids) == sorted(results["a"] + results["b"])
    assert len(set(ids)) == 2 * per_sender
    # Each sender's messages keep their order; both readers see the same order.
    for label in ("a", "b"):
        assert [i for i in ids if i in results[label]] == results[label]
    assert [e["event_id"] for e in timeline(bob, room_id) if e["type"] == "m.room.message"] == ids


# Members


def test_joined_rooms_and_members(server: ServerProcess, alice: Client, bob: Client) -> None:
    carol, dave = new_user(server), new_user(server)
    resp = bob.put(f"profile/{q(bob.user_id or '')}/displayname", {"displayname": "Bob B"})
    assert resp.status == 200, resp
    room_id = create_room(alice, preset="public_chat")
    assert join(bob, room_id).status == 200
    assert alice.post(f"rooms/{q(room_id)}/invite", {"user_id": carol.user_id}).status == 200
    assert join(dave, room_id).status == 200
    assert dave.post(f"rooms/{q(room_id)}/leave", {}).status == 200

    assert room_id in alice.get("joined_rooms").body["joined_rooms"]
    assert room_id in bob.get("joined_rooms").body["joined_rooms"]
    assert room_id not in carol.get("joined_rooms").body["joined_rooms"]
    assert room_id not in dave.get("joined_rooms").body["joined_rooms"]

    resp = bob.get(f"rooms/{q(room_id)}/joined_members")
    assert resp.status == 200, resp
    assert set(resp.body["joined"]) == {alice.user_id, bob.user_id}
    assert resp.body["joined"][bob.user_id]["display_name"] == "Bob B"
    resp = carol.get(f"rooms/{q(room_id)}/joined_members")
    assert resp.status == 403, resp

    def members(**params: str) -> dict[str, str]:
        resp = alice.get(f"rooms/{q(room_id)}/members", params=params)
        assert resp.status == 200, resp
        return {e["state_key"]: e["content"]["membership"] for e in resp.body["chunk"]}

    everyone = {
        alice.user_id: "join",
        bob.user_id: "join",
        carol.user_id: "invite",
        dave.user_id: "leave",
    }
    assert members() == everyone
    assert members(membership="join") == {alice.user_id: "join", bob.user_id: "join"}
    assert members(membership="invite") == {carol.user_id: "invite"}
    assert members(membership="leave") == {dave.user_id: "leave"}
    assert members(not_membership="join") == {carol.user_id: "invite", dave.user_id: "leave"}
    assert members(not_membership="leave") == {
        alice.user_id: "join",
        bob.user_id: "join",
        carol.user_id: "invite",
    }
    # Members at an earlier point of the timeline.
    token = messages(alice, room_id, dir="b", limit=1).body["start"]
    erin = new_user(server)
    assert alice.post(f"rooms/{q(room_id)}/invite", {"user_id": erin.user_id}).status == 200
    assert erin.user_id in members()
    assert members(at=token) == everyone
    # Non-members can't list members.
    outsider = new_user(server)
    resp = outsider.get(f"rooms/{q(room_id)}/members")
    assert resp.status == 403, resp


# Aliases and the directory


def test_aliases_api(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="public_chat")
    other_room = create_room(alice)
    assert join(bob, room_id).status == 200
    alias = f"#a{secrets.token_hex(5)}:{alice.server.server_name}"
    resp = alice.put(f"directory/room/{q(alias)}", {"room_id": room_id})
    assert resp.status == 200, resp
    resp = alice.put(f"directory/room/{q(alias)}", {"room_id": other_room})
    assert resp.status == 409, resp
    resp = bob.get(f"directory/room/{q(alias)}")
    assert resp.status == 200
    assert resp.body["room_id"] == room_id
    resp = bob.get(f"rooms/{q(room_id)}/aliases")
    assert resp.status == 200, resp
    assert alias in resp.body["aliases"]
    # Another server's namespace is refused.
    resp = alice.put(f"directory/room/{q('#x:elsewhere.example')}", {"room_id": room_id})
    assert resp.status == 400, resp
    # An alias for an unknown room is refused.
    missing_room = f"!nosuch:{alice.server.server_name}"
    resp = alice.put(f"directory/room/{q('#z' + alias[2:])}", {"room_id": missing_room})
    assert resp.status in (400, 404), resp
    # bob (no power, not the creator) can't delete it; alice (creator) can.
    resp = bob.delete(f"directory/room/{q(alias)}")
    assert resp.status == 403, resp
    resp = alice.delete(f"directory/room/{q(alias)}")
    assert resp.status == 200, resp
    resp = bob.get(f"directory/room/{q(alias)}")
    assert resp.status == 404
    assert resp.body["errcode"] == "M_NOT_FOUND"
    assert alias not in alice.get(f"rooms/{q(room_id)}/aliases").body["aliases"]
    resp = alice.delete(f"directory/room/{q(alias)}")
    assert resp.status == 404
    # A canonical alias must point at the room (M_BAD_ALIAS), or be valid at all.
    resp = alice.put(f"rooms/{q(room_id)}/state/m.room.canonical_alias", {"alias": alias})
    assert resp.status == 400, resp
    assert resp.body["errcode"] == "M_BAD_ALIAS"
    resp = alice.put(f"rooms/{q(room_id)}/state/m.room.canonical_alias", {"alias": "nope"})
    assert resp.status == 400, resp
    assert resp.body["errcode"] == "M_INVALID_PARAM"
    resp = alice.put(f"directory/room/{q('not-an-alias')}", {"room_id": room_id})
    assert resp.status == 400, resp
    # Bob may now take the freed alias for the same room, then delete his own.
    assert bob.put(f"directory/room/{q(alias)}", {"room_id": room_id}).status == 200
    assert bob.delete(f"directory/room/{q(alias)}").status == 200


def test_alias_needs_membership_of_the_room(
    alice: Client, bob: Client, server: ServerProcess
) -> None:
    """Nobody outside a room (private or public) can give it a name; its members can; a
    server admin can."""
    private = create_room(alice, preset="private_chat")
    public = create_room(alice, preset="public_chat")
    for room_id in (private, public):
        alias = f"#outsider{secrets.token_hex(5)}:{server.server_name}"
        resp = bob.put(f"directory/room/{q(alias)}", {"room_id": room_id})
        assert resp.status == 403, resp
        assert resp.body["errcode"] == "M_FORBIDDEN"
        assert bob.get(f"directory/room/{q(alias)}").status == 404
    join(bob, public)
    alias = f"#member{secrets.token_hex(5)}:{server.server_name}"
    assert bob.put(f"directory/room/{q(alias)}", {"room_id": public}).status == 200
    admin = shared_secret_register(server, admin=True)
    alias = f"#admin{secrets.token_hex(5)}:{server.server_name}"
    assert admin.put(f"directory/room/{q(alias)}", {"room_id": private}).status == 200


def test_alias_needs_canonical_alias_power_when_configured(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory({"rooms": {"require_power_for_aliases": True}})
    alice, bob = new_user(server), new_user(server)
    room_id = create_room(alice, preset="public_chat")
    join(bob, room_id)
    alias = f"#power{secrets.token_hex(5)}:{server.server_name}"
    assert bob.put(f"directory/room/{q(alias)}", {"room_id": room_id}).status == 403
    assert alice.put(f"directory/room/{q(alias)}", {"room_id": room_id}).status == 200


def test_room_aliases_forbidden_for_non_member(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="private_chat")
    resp = bob.get(f"rooms/{q(room_id)}/aliases")
    assert resp.status == 403, resp


def test_directory_visibility_and_public_rooms(alice: Client, bob: Client) -> None:
    token = "dirtest" + secrets.token_hex(4)
    room_id = create_room(alice, preset="public_chat", name=f"{token} room", topic="about")
    path = f"directory/list/room/{q(room_id)}"
    resp = bob.get(path, token=False)
    assert resp.status == 200, resp
    assert resp.body == {"visibility": "private"}

    def search(term: str, **extra: Any) -> Response:
        resp = bob.post("publicRooms", {"filter": {"generic_search_term": term}, **extra})
        assert resp.status == 200, resp
        return resp

    assert search(token).body["chunk"] == []
    # bob (not in the room) may not publish it
    resp = bob.put(path, {"visibility": "public"})
    assert resp.status == 403, resp
    resp = alice.put(path, {"visibility": "public"})
    assert resp.status == 200, resp
    assert bob.get(path).body == {"visibility": "public"}
    chunk = search(token).body["chunk"]
    assert [e["room_id"] for e in chunk] == [room_id]
    entry = chunk[0]
    assert entry["name"] == f"{token} room"
    assert entry["topic"] == "about"
    assert entry["num_joined_members"] == 1
    assert entry["join_rule"] == "public"
    assert entry["world_readable"] is False
    assert isinstance(entry["guest_can_join"], bool)
    # the search is case-insensitive and matches part of the name
    assert [e["room_id"] for e in search(token.upper()[2:]).body["chunk"]] == [room_id]

    resp = alice.put(path, {"visibility": "private"})
    assert resp.status == 200
    assert bob.get(path).body == {"visibility": "private"}
    assert search(token).body["chunk"] == []

    resp = bob.get(f"directory/list/room/{q('!nosuch:' + alice.server.server_name)}")
    assert resp.status == 404


def test_public_rooms_pagination(alice: Client, bob: Client) -> None:
    token = "pagetest" + secrets.token_hex(4)
    created = {create_room(alice, visibility="public", name=f"{token} {i}") for i in range(3)}
    first = bob.post("publicRooms", {"limit": 2, "filter": {"generic_search_term": token}})
    assert first.status == 200, first
    assert len(first.body["chunk"]) == 2
    assert "next_batch" in first.body
    second = bob.post(
        "publicRooms",
        {"limit": 2, "since": first.body["next_batch"], "filter": {"generic_search_term": token}},
    )
    assert second.status == 200, second
    assert len(second.body["chunk"]) == 1
    assert "next_batch" not in second.body
    seen = [e["room_id"] for e in first.body["chunk"] + second.body["chunk"]]
    assert sorted(seen) == sorted(created)

    # GET /publicRooms (no auth needed) pages through everything, without duplicates.
    found: list[str] = []
    since: str | None = None
    for _ in range(100):
        params = {"limit": "3"}
        if since:
            params["since"] = since
        resp = bob.get("publicRooms", token=False, params=params)
        assert resp.status == 200, resp
        assert len(resp.body["chunk"]) <= 3
        found.extend(e["room_id"] for e in resp.body["chunk"])
        since = resp.body.get("next_batch")
        if not since:
            break
    assert since is None
    assert len(found) == len(set(found))
    assert created <= set(found)


# Reading history


def test_timestamp_to_event(alice: Client) -> None:
    room_id = create_room(alice)
    time.sleep(0.02)
    first = send(alice, room_id, "first")
    time.sleep(0.02)
    second = send(alice, room_id, "second")
    time.sleep(0.02)
    ts1 = get_event(alice, room_id, first).body["origin_server_ts"]
    ts2 = get_event(alice, room_id, second).body["origin_server_ts"]
    assert ts1 < ts2
    path = f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event"

    def lookup(ts: int, direction: str) -> Response:
        return alice.get(path, params={"ts": str(ts), "dir": direction})

    resp = lookup(ts1, "f")
    assert resp.status == 200, resp
    assert resp.body == {"event_id": first, "origin_server_ts": ts1}
    assert lookup(ts1 + 1, "f").body["event_id"] == second
    assert lookup(ts2 - 1, "b").body["event_id"] == first
    assert lookup(ts2 + 10_000, "b").body["event_id"] == second
    resp = lookup(ts2 + 10_000_000, "f")
    assert resp.status == 404, resp
    assert resp.body["errcode"] == "M_NOT_FOUND"
    assert alice.get(path, params={"ts": str(ts1)}).status == 400
    assert alice.get(path, params={"ts": "x", "dir": "f"}).status == 400


def test_context(alice: Client) -> None:
    room_id = create_room(alice, name="ctx")
    ids = [send(alice, room_id, f"m{i}") for i in range(1, 6)]
    resp = alice.get(f"rooms/{q(room_id)}/context/{q(ids[2])}", params={"limit": "4"})
    assert resp.status == 200, resp
    body = resp.body
    assert body["event"]["event_id"] == ids[2]
    assert body["event"]["content"]["body"] == "m3"
    # events_before is reverse-chronological, events_after chronological
    assert [e["event_id"] for e in body["events_before"]] == [ids[1], ids[0]]
    assert [e["event_id"] for e in body["events_after"]] == [ids[3], ids[4]]
    current = {(e["type"], e["state_key"]): e for e in body["state"]}
    assert ("m.room.create", "") in current
    assert current[("m.room.name", "")]["content"] == {"name": "ctx"}
    assert current[("m.room.member", alice.user_id)]["content"]["membership"] == "join"
    # The tokens continue the timeline.
    older = messages(alice, room_id, dir="b", **{"from": body["start"]}, limit=1)
    assert older.status == 200, older
    assert [e["type"] for e in older.body["chunk"]] == ["m.room.name"]
    newer = messages(alice, room_id, dir="f", **{"from": body["end"]}, limit=10)
    assert newer.status == 200 and newer.body["chunk"] == []
    # limit=0 still returns the event itself.
    resp = alice.get(f"rooms/{q(room_id)}/context/{q(ids[2])}", params={"limit": "0"})
    assert resp.status == 200, resp
    assert resp.body["event"]["event_id"] == ids[2]
    assert resp.body["events_before"] == [] and resp.body["events_after"] == []
    # An unknown event: 404
    resp = alice.get(f"rooms/{q(room_id)}/context/{q('$nosuchevent')}")
    assert resp.status == 404


def test_messages_pagination(alice: Client) -> None:
    room_id = create_room(alice)
    ids = [send(alice, room_id, f"m{i}") for i in range(1, 8)]

    # Walk back from the newest with limit=3 until there is no `end`.
    walked: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(50):
        params: dict[str, Any] = {"dir": "b", "limit": 3}
        if token is not None:
            params["from"] = token
        resp = messages(alice, room_id, **params)
        assert resp.status == 200, resp
        assert len(resp.body["chunk"]) <= 3
        assert isinstance(resp.body["start"], str)
        walked.extend(resp.body["chunk"])
        token = resp.body.get("end")
        if token is None:
            break
    assert token is None
    walked_ids = [e["event_id"] for e in walked]
    assert len(walked_ids) == len(set(walked_ids))
    assert [e["event_id"] for e in walked if e["type"] == "m.room.message"] == ids[::-1]
    assert walked[-1]["type"] == "m.room.create"

    # Walking forward from the start gives the same events in the opposite order.
    forward: list[dict[str, Any]] = []
    token = None
    for _ in range(50):
        params = {"dir": "f", "limit": 4}
        if token is not None:
            params["from"] = token
        resp = messages(alice, room_id, **params)
        assert resp.status == 200, resp
        forward.extend(resp.body["chunk"])
        token = resp.body.get("end")
        if token is None:
            break
    assert [e["event_id"] for e in forward] == walked_ids[::-1]

    # Tokens are positions between events.
    page1 = messages(alice, room_id, dir="b", limit=3)
    assert [e["event_id"] for e in page1.body["chunk"]] == [ids[6], ids[5], ids[4]]
    page2 = messages(alice, room_id, dir="b", limit=3, **{"from": page1.body["end"]})
    assert [e["event_id"] for e in page2.body["chunk"]] == [ids[3], ids[2], ids[1]]
    again = messages(alice, room_id, dir="f", limit=3, **{"from": page1.body["end"]})
    assert [e["event_id"] for e in again.body["chunk"]] == [ids[4], ids[5], ids[6]]
    bounded = messages(alice, room_id, dir="b", limit=10, to=page1.body["end"])
    assert [e["event_id"] for e in bounded.body["chunk"]] == [ids[6], ids[5], ids[4]]
    between = messages(
        alice, room_id, dir="f", limit=10, to=page1.body["end"], **{"from": page2.body["end"]}
    )
    assert [e["event_id"] for e in between.body["chunk"]] == [ids[1], ids[2], ids[3]]

    # `start` of a backwards read is "now": a forward read from it sees only new events.
    now = page1.body["start"]
    assert messages(alice, room_id, dir="f", **{"from": now}).body["chunk"] == []
    newest = send(alice, room_id, "m8")
    resp = messages(alice, room_id, dir="f", **{"from": now})
    assert [e["event_id"] for e in resp.body["chunk"]] == [newest]

    # filters and bad parameters
    resp = messages(alice, room_id, dir="b", limit=100, filter='{"types": ["m.room.message"]}')
    assert resp.status == 200
    assert [e["event_id"] for e in resp.body["chunk"]] == [newest, *ids[::-1]]
    assert messages(alice, room_id, dir="x").status == 400
    assert messages(alice, room_id, **{"from": "not-a-token"}).status == 400


def test_forget_after_leave(alice: Client, bob: Client, server: ServerProcess) -> None:
    room_id = create_room(alice, preset="public_chat")
    assert join(bob, room_id).status == 200
    event_id = send(alice, room_id, "before forgetting")
    resp = bob.post(f"rooms/{q(room_id)}/forget", {})
    assert resp.status == 400, resp
    assert resp.body["errcode"] == "M_UNKNOWN"
    assert bob.post(f"rooms/{q(room_id)}/leave", {}).status == 200
    # Before forgetting, a departed user still reads what they could see.
    assert "before forgetting" in bodies(timeline(bob, room_id))
    resp = bob.post(f"rooms/{q(room_id)}/forget", {})
    assert resp.status == 200, resp
    assert room_id not in bob.get("joined_rooms").body["joined_rooms"]
    # "After this API is called, a user will no longer be able to retrieve history."
    resp = messages(bob, room_id, dir="b", limit=100)
    assert resp.status == 403 or "before forgetting" not in bodies(resp.body["chunk"]), resp
    assert get_event(bob, room_id, event_id).status in (403, 404)
    # Rejoining works and shows the room again.
    assert join(bob, room_id).status == 200
    assert room_id in bob.get("joined_rooms").body["joined_rooms"]
    # A user who was never in the room can't forget it.
    outsider = new_user(server)
    resp = outsider.post(f"rooms/{q(room_id)}/forget", {})
    assert resp.status in (400, 403, 404), resp


def test_concurrent_identical_v12_rooms_get_distinct_ids(alice: Client) -> None:
    """Room v12 IDs are the create event's hash: identical requests in the same millisecond
    must still make distinct rooms, not a 500."""
    from concurrent.futures import ThreadPoolExecutor

    def create(_: int) -> Any:
        return Client(alice.server, alice.token).post("createRoom", {"room_version": "12"})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(create, range(16)))
    assert all(r.status == 200 for r in responses), responses
    assert len({r.body["room_id"] for r in responses}) == 16
