"""Simplified sliding sync (MSC4186) over real HTTP: lists, subscriptions, incremental
answers, required state, long-polls, extensions, positions surviving a restart."""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import nio
import olm
from canonicaljson import encode_canonical_json

from tests.harness import Client, Response, ServerProcess, create_room, join, new_user, q
from tests.test_e2ee_keys import OLM, OTK
from tests.test_e2ee_private import MEGOLM, logged_in, sync_once
from tests.test_rooms_basic import send

SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
V4 = "/_matrix/client/v4/sync"


def sliding(client: Client, body: dict[str, Any], pos: str | None = None,
            timeout: int | None = None, path: str = SS) -> Response:  # fmt: skip
    params = {}
    if pos is not None:
        params["pos"] = pos
    if timeout is not None:
        params["timeout"] = str(timeout)
    return client.request("POST", path, body=body, params=params)


def ok(resp: Response) -> dict[str, Any]:
    assert resp.status == 200, resp
    return dict(resp.body)


ROOM_LIST = {
    "all": {"ranges": [[0, 19]], "timeline_limit": 1,
            "required_state": [["m.room.create", ""], ["m.room.name", ""]]},
}  # fmt: skip


def test_room_list_first_page_then_only_changes(alice: Client, bob: Client) -> None:
    rooms = [create_room(alice, name=f"Room {i}") for i in range(3)]
    for room_id in rooms:
        join(bob, room_id)
    send(alice, rooms[0], "newest")  # room 0 moves to the top
    first = ok(sliding(bob, {"conn_id": "main", "lists": ROOM_LIST}))
    assert first["lists"]["all"]["count"] == 3
    assert set(first["rooms"]) == set(rooms)
    top = first["rooms"][rooms[0]]
    assert top["initial"] is True and top["name"] == "Room 0"
    assert [e["content"].get("body") for e in top["timeline"]] == ["newest"]
    assert top["limited"] is True and top["joined_count"] == 2 and top["lists"] == ["all"]
    assert {(e["type"], e["state_key"]) for e in top["required_state"]} == {
        ("m.room.create", ""), ("m.room.name", "")}  # fmt: skip
    stamps = {r: first["rooms"][r]["bump_stamp"] for r in rooms}
    assert stamps[rooms[0]] == max(stamps.values())
    # Nothing new: an immediate answer with no rooms and the same position.
    again = ok(sliding(bob, {"conn_id": "main", "lists": ROOM_LIST}, pos=first["pos"]))
    assert again["rooms"] == {} and again["pos"] == first["pos"]
    # One new message: only that room, with only the new event.
    send(alice, rooms[2], "hello")
    after = ok(sliding(bob, {"conn_id": "main", "lists": ROOM_LIST}, pos=first["pos"]))
    assert list(after["rooms"]) == [rooms[2]]
    entry = after["rooms"][rooms[2]]
    assert "initial" not in entry and entry["num_live"] == 1
    assert [e["content"]["body"] for e in entry["timeline"]] == ["hello"]
    assert "required_state" not in entry or entry["required_state"] == []
    assert after["pos"] != first["pos"]


def test_element_x_start_up_sequence(alice: Client, bob: Client) -> None:
    """Element X: the room list with one event per room, then a subscription to the room the
    user opens with a longer timeline (earlier events come as an expanded timeline), then
    the encryption extensions."""
    room_id = create_room(alice, name="Opened")
    join(bob, room_id)
    bodies = [f"m{i}" for i in range(6)]
    for body in bodies:
        send(alice, room_id, body)
    first = ok(sliding(bob, {"conn_id": "room-list", "lists": ROOM_LIST}))
    assert [e["content"]["body"] for e in first["rooms"][room_id]["timeline"]] == ["m5"]
    subscribe = {
        "conn_id": "room-list", "lists": ROOM_LIST,
        "room_subscriptions": {room_id: {"timeline_limit": 4, "required_state": [["*", "*"]]}},
        "extensions": {"e2ee": {"enabled": True}, "to_device": {"enabled": True}},
    }  # fmt: skip
    opened = ok(sliding(bob, subscribe, pos=first["pos"], timeout=0))
    entry = opened["rooms"][room_id]
    assert entry["unstable_expanded_timeline"] is True and "initial" not in entry
    assert [e["content"]["body"] for e in entry["timeline"]] == bodies[-4:]
    assert entry["limited"] is True and entry["num_live"] == 0
    # The wider required state sends what the old config did not: all of it but the two.
    state_keys = {(e["type"], e["state_key"]) for e in entry["required_state"]}
    assert ("m.room.member", bob.user_id) in state_keys
    assert ("m.room.create", "") not in state_keys and ("m.room.power_levels", "") in state_keys
    e2ee = opened["extensions"]["e2ee"]
    assert e2ee["device_lists"] == {"changed": [], "left": []}
    assert isinstance(e2ee["device_one_time_keys_count"], dict)
    assert opened["extensions"]["to_device"]["events"] == []
    # Asked again at the same limit, nothing is re-sent.
    steady = ok(sliding(bob, subscribe, pos=opened["pos"], timeout=0))
    assert steady["rooms"] == {}


def test_new_message_ends_a_long_poll(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    first = ok(sliding(bob, {"lists": ROOM_LIST}))
    waiting: dict[str, Any] = {}

    def poll() -> None:
        waiting["resp"] = sliding(bob, {"lists": ROOM_LIST}, pos=first["pos"], timeout=20_000)

    started = time.monotonic()
    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    event_id = send(alice, room_id, "wake up")
    thread.join(15)
    assert not thread.is_alive()
    assert time.monotonic() - started < 10
    answer = ok(waiting["resp"])
    timeline = answer["rooms"][room_id]["timeline"]
    assert [e["event_id"] for e in timeline] == [event_id]
    assert answer["rooms"][room_id]["num_live"] == 1


def test_filters_dm_encrypted_invites_and_spaces(alice: Client, bob: Client) -> None:
    plain = create_room(alice, name="Plain")
    megolm = {"algorithm": "m.megolm.v1.aes-sha2"}
    encrypted = create_room(
        alice, initial_state=[{"type": "m.room.encryption", "state_key": "", "content": megolm}]
    )
    dm = create_room(
        alice, preset="trusted_private_chat", is_direct=True, invite=[bob.user_id or ""]
    )
    space = create_room(alice, creation_content={"type": "m.space"}, name="Space")
    for room_id in (plain, encrypted, space):
        join(bob, room_id)
    resp = bob.put(f"user/{q(bob.user_id or '')}/account_data/m.direct",
                   {alice.user_id: [dm]})  # fmt: skip
    assert resp.status == 200
    child = {"via": [alice.server.server_name]}
    assert alice.put(f"rooms/{q(space)}/state/m.space.child/{q(plain)}", child).status == 200
    lists = {
        name: {"timeline_limit": 0, "required_state": [], "filters": filters}
        for name, filters in {
            "dms": {"is_dm": True}, "encrypted": {"is_encrypted": True},
            "invites": {"is_invite": True}, "spaces": {"room_types": ["m.space"]},
            "no_spaces": {"not_room_types": ["m.space"], "is_invite": False},
            "in_space": {"spaces": [space]},
        }.items()
    }  # fmt: skip
    answer = ok(sliding(bob, {"lists": lists}))
    members = {name: {r for r, e in answer["rooms"].items() if name in e.get("lists", [])}
               for name in lists}  # fmt: skip
    assert members["dms"] == {dm} and members["invites"] == {dm}
    assert members["encrypted"] == {encrypted}
    assert members["spaces"] == {space}
    assert members["no_spaces"] == {plain, encrypted}
    assert members["in_space"] == {plain}
    assert answer["lists"]["no_spaces"]["count"] == 2
    invite = answer["rooms"][dm]
    assert invite["membership"] == "invite" and "timeline" not in invite
    assert any(e["type"] == "m.room.member" and e["state_key"] == bob.user_id
               for e in invite["invite_state"])  # fmt: skip
    assert answer["rooms"][encrypted].get("is_dm") is None
    # Joining the DM sends it again, whole, as a joined room.
    join(bob, dm)
    after = ok(sliding(bob, {"lists": lists}, pos=answer["pos"]))
    assert after["rooms"][dm]["initial"] is True and after["rooms"][dm]["is_dm"] is True
    assert after["rooms"][dm]["membership"] == "join"


def test_lazy_members_me_and_state_changes(alice: Client, bob: Client, client: Client) -> None:
    carol = new_user(alice.server)
    room_id = create_room(alice, name="Lazy")
    join(bob, room_id)
    join(carol, room_id)
    send(carol, room_id, "from carol")
    lazy = {"room_subscriptions": {room_id: {"timeline_limit": 1, "required_state": [
        ["m.room.name", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"]]}}}  # fmt: skip
    first = ok(sliding(bob, lazy))
    members = {e["state_key"] for e in first["rooms"][room_id]["required_state"]
               if e["type"] == "m.room.member"}  # fmt: skip
    assert members == {carol.user_id, bob.user_id}  # the sender and me, not alice
    # A name change comes as changed state and a new name; nothing else is re-sent.
    assert alice.put(f"rooms/{q(room_id)}/state/m.room.name", {"name": "Renamed"}).status == 200
    after = ok(sliding(bob, lazy, pos=first["pos"]))
    entry = after["rooms"][room_id]
    assert entry["name"] == "Renamed"
    assert [(e["type"], e["content"].get("name")) for e in entry["required_state"]
            if e["type"] != "m.room.member"] == [("m.room.name", "Renamed")]  # fmt: skip
    assert {e["state_key"] for e in entry["required_state"] if e["type"] == "m.room.member"} == {
        alice.user_id}  # fmt: skip
    # The final request dialect on the stable path, with the same connection rules.
    names = {"include": [{"type": "m.room.name"}], "lazy_members": True}
    stable = {"conn_id": "v4", "room_subscriptions": {
        room_id: {"timeline_limit": 1, "required_state": names}}}  # fmt: skip
    v4 = ok(sliding(bob, stable, path=V4))
    assert [e["content"]["name"] for e in v4["rooms"][room_id]["timeline_events"]] == ["Renamed"]
    assert {e["type"] for e in v4["rooms"][room_id]["required_state"]} == {
        "m.room.name", "m.room.member"}  # fmt: skip


def test_unknown_positions_and_bad_requests(alice: Client) -> None:
    first = ok(sliding(alice, {"conn_id": "a", "lists": ROOM_LIST}))
    prefix = first["pos"].split(".")[0]
    for pos, conn in (("999", "a"), ("garbage", "a"), (first["pos"], "other"),
                      (f"{prefix}.²", "a"), (f"{prefix}.{'9' * 30}", "a")):  # fmt: skip
        resp = sliding(alice, {"conn_id": conn, "lists": ROOM_LIST}, pos=pos)
        assert resp.status == 400 and resp.body["errcode"] == "M_UNKNOWN_POS", resp
    # Starting the connection again makes its old positions unknown.
    ok(sliding(alice, {"conn_id": "a", "lists": ROOM_LIST}))
    stale = sliding(alice, {"conn_id": "a", "lists": ROOM_LIST}, pos=first["pos"])
    assert stale.status == 400 and stale.body["errcode"] == "M_UNKNOWN_POS"
    bad: list[dict[str, Any]] = [{"lists": {"x": {"ranges": [[5, 1]], "timeline_limit": 1}}},
                 {"lists": {"x": {"timeline_limit": -1}}}, {"lists": []},
                 {"room_subscriptions": {"!r:x": {"timeline_limit": 1, "required_state": [["a"]]}}},
                 {"room_subscriptions": {f"!r{i}:x": {} for i in range(1001)}},
                 {"set_presence": "dancing"},
                 {"extensions": {"to_device": {"enabled": "yes"}}}]  # fmt: skip
    for body in bad:
        resp = sliding(alice, body)
        assert resp.status == 400 and resp.body["errcode"] == "M_INVALID_PARAM", (body, resp)
    assert sliding(Client(alice.server), {}).status == 401


def test_positions_survive_a_restart_and_expire(server_factory: Any) -> None:
    server = server_factory({"rooms": {"sliding_sync_connection_lifetime": "3s"}})
    alice = new_user(server)
    room_id = create_room(alice)
    first = ok(sliding(alice, {"lists": ROOM_LIST}))
    server.restart()
    send(alice, room_id, "after restart")
    after = ok(sliding(alice, {"lists": ROOM_LIST}, pos=first["pos"]))
    assert [e["content"]["body"] for e in after["rooms"][room_id]["timeline"]] == ["after restart"]
    assert "initial" not in after["rooms"][room_id]
    time.sleep(3.5)
    expired = sliding(alice, {"lists": ROOM_LIST}, pos=after["pos"])
    assert expired.status == 400 and expired.body["errcode"] == "M_UNKNOWN_POS"


def test_extensions_account_data_receipts_typing_and_to_device(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    hi = send(alice, room_id, "read me")
    exts = {"to_device": {"enabled": True}, "account_data": {"enabled": True},
            "receipts": {"enabled": True}, "typing": {"enabled": True}}  # fmt: skip
    body = {"lists": ROOM_LIST, "extensions": exts}
    first = ok(sliding(bob, body))
    global_types = {e["type"] for e in first["extensions"]["account_data"]["global"]}
    assert "m.push_rules" in global_types
    assert alice.post(f"rooms/{q(room_id)}/receipt/m.read/{q(hi)}", {}).status == 200
    assert alice.put(f"rooms/{q(room_id)}/typing/{q(alice.user_id or '')}",
                     {"typing": True, "timeout": 10_000}).status == 200  # fmt: skip
    assert bob.put(f"user/{q(bob.user_id or '')}/rooms/{q(room_id)}/account_data/org.example",
                   {"x": 1}).status == 200  # fmt: skip
    message = {"messages": {bob.user_id: {bob.device_id: {"secret": "s1"}}}}
    assert alice.put("sendToDevice/org.example.test/t1", message).status == 200
    second = ok(sliding(bob, {**body, "extensions": {**exts, "to_device": {
        "enabled": True, "since": first["extensions"]["to_device"]["next_batch"]}}},
        pos=first["pos"]))  # fmt: skip
    extensions = second["extensions"]
    receipt = extensions["receipts"]["rooms"][room_id]["content"][hi]["m.read"]
    assert alice.user_id in receipt
    assert extensions["typing"]["rooms"][room_id]["content"]["user_ids"] == [alice.user_id]
    assert extensions["account_data"]["rooms"][room_id] == [
        {"type": "org.example", "content": {"x": 1}}]  # fmt: skip
    to_device = extensions["to_device"]
    assert [e["content"] for e in to_device["events"]] == [{"secret": "s1"}]
    # Acknowledged by the next since: not sent again.
    acknowledged = {"enabled": True, "since": to_device["next_batch"]}
    third_body = {**body, "extensions": {**exts, "to_device": acknowledged}}
    third = ok(sliding(bob, third_body, pos=second["pos"], timeout=0))
    assert third["extensions"]["to_device"]["events"] == []


def test_kicked_rooms_stay_listed_left_ones_do_not(alice: Client, bob: Client) -> None:
    kicked = create_room(alice, name="Kicked from")
    left = create_room(alice, name="Left")
    for room_id in (kicked, left):
        join(bob, room_id)
    first = ok(sliding(bob, {"conn_id": "k", "lists": ROOM_LIST}))
    send(alice, kicked, "before the kick")
    kick = alice.post(f"rooms/{q(kicked)}/kick", {"user_id": bob.user_id, "reason": "bye"})
    assert kick.status == 200
    send(alice, kicked, "after the kick: unseen")
    leave_resp = bob.post(f"rooms/{q(left)}/leave", {})
    assert leave_resp.status == 200
    after = ok(sliding(bob, {"conn_id": "k", "lists": ROOM_LIST}, pos=first["pos"]))
    entry = after["rooms"][kicked]
    assert entry["membership"] == "leave"
    bodies = [e["content"].get("body") for e in entry["timeline"]]
    assert (
        "after the kick: unseen" not in bodies and entry["timeline"][-1]["type"] == "m.room.member"
    )
    assert after["rooms"][left]["membership"] == "leave"  # sent before, so told it ended
    fresh = ok(sliding(bob, {"conn_id": "new", "lists": ROOM_LIST}))
    assert kicked in fresh["rooms"] and left not in fresh["rooms"]


def olm_device(client: Client, one_time_keys: int) -> olm.Account:
    """A real Olm device for ``client``: identity keys, signed one-time keys and a fallback
    key, uploaded as /keys/upload wants them (each object signed by the device's ed25519)."""
    user_id, device_id = client.user_id or "", client.device_id or ""
    account = olm.Account()

    def signed(body: dict[str, Any]) -> dict[str, Any]:
        signature = account.sign(encode_canonical_json(body))
        return {**body, "signatures": {user_id: {f"ed25519:{device_id}": signature}}}

    identity = account.identity_keys
    device_keys = signed({
        "user_id": user_id, "device_id": device_id, "algorithms": [OLM, MEGOLM],
        "keys": {f"curve25519:{device_id}": identity["curve25519"],
                 f"ed25519:{device_id}": identity["ed25519"]},
    })  # fmt: skip
    account.generate_one_time_keys(one_time_keys)
    account.generate_fallback_key()
    otks = {f"{OTK}:{key_id}": signed({"key": key})
            for key_id, key in account.one_time_keys["curve25519"].items()}  # fmt: skip
    fallback = {f"{OTK}:{key_id}": signed({"key": key, "fallback": True})
                for key_id, key in account.fallback_key["curve25519"].items()}  # fmt: skip
    body = {"device_keys": device_keys, "one_time_keys": otks, "fallback_keys": fallback}
    resp = client.post("keys/upload", body)
    assert resp.status == 200, resp
    assert resp.body["one_time_key_counts"].get(OTK) == one_time_keys, resp
    account.mark_keys_as_published()
    return account


async def test_room_keys_over_to_device_extension_decrypt_the_timeline(
    server: ServerProcess, bob: Client, tmp_path: Path
) -> None:
    """Bob is a real Olm device that reads only through sliding sync: Alice (matrix-nio)
    claims one of his one-time keys, sends him the Megolm room key as an Olm-encrypted
    to-device message and posts an encrypted message. The to_device extension delivers the
    key until it is acknowledged, the e2ee extension counts the claimed key as gone, and the
    key decrypts the event in the subscribed room's timeline."""
    account = olm_device(bob, one_time_keys=3)
    alice_http, alice = await logged_in(server, str(tmp_path))
    try:
        encryption = {"type": "m.room.encryption", "content": {"algorithm": MEGOLM}}
        room_id = create_room(alice_http, initial_state=[encryption])
        join(bob, room_id)
        exts = {"to_device": {"enabled": True}, "e2ee": {"enabled": True}}
        subscription = {room_id: {"timeline_limit": 5, "required_state": [["*", "*"]]}}
        body: dict[str, Any] = {"conn_id": "olm", "room_subscriptions": subscription,
                                "extensions": exts}  # fmt: skip
        first = ok(sliding(bob, body, timeout=0))
        assert first["extensions"]["e2ee"]["device_one_time_keys_count"][OTK] == 3
        assert first["extensions"]["e2ee"]["device_unused_fallback_key_types"] == [OTK]
        since = first["extensions"]["to_device"]["next_batch"]

        await sync_once(alice)  # the room, its members, Bob's device keys
        plaintext = f"only sliding sync can read this {secrets.token_hex(4)}"
        content = {"msgtype": "m.text", "body": plaintext}
        sent = await alice.room_send(room_id, "m.room.message", content,
                                     ignore_unverified_devices=True)  # fmt: skip
        assert isinstance(sent, nio.RoomSendResponse), sent
        alice_keys = alice.olm.account.identity_keys if alice.olm else {}
    finally:
        await alice.close()

    # Bob reads: long-poll until both the to-device key and the timeline event have come.
    to_device: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    unacknowledged = {
        **body,
        "extensions": {**exts, "to_device": {"enabled": True, "since": since}},
    }
    pos, deadline = first["pos"], time.monotonic() + 8
    while not (to_device and timeline):
        assert time.monotonic() < deadline, (to_device, timeline)
        answer = ok(sliding(bob, unacknowledged, pos=pos, timeout=2000))
        pos = answer["pos"]
        if not to_device and answer["extensions"]["to_device"]["events"]:
            to_device, keyed = answer["extensions"]["to_device"]["events"], answer
        room = answer["rooms"].get(room_id, {})
        timeline += [e for e in room.get("timeline", []) if e["type"] == "m.room.encrypted"]
    assert [e["event_id"] for e in timeline] == [sent.event_id]
    assert [(e["type"], e["sender"]) for e in to_device] == [("m.room.encrypted", alice.user_id)]
    # Not acknowledged (the same since), the key comes again, unchanged.
    answer = ok(sliding(bob, unacknowledged, pos=pos, timeout=0))
    assert answer["extensions"]["to_device"]["events"] == to_device
    pos = answer["pos"]
    # The claim took one one-time key (the fallback key is left unused).
    assert keyed["extensions"]["e2ee"]["device_one_time_keys_count"][OTK] == 2
    assert keyed["extensions"]["e2ee"]["device_unused_fallback_key_types"] == [OTK]
    # Acknowledged by the next since, it is gone.
    acknowledged = {"enabled": True, "since": answer["extensions"]["to_device"]["next_batch"]}
    after = ok(sliding(bob, {**body, "extensions": {**exts, "to_device": acknowledged}},
                       pos=pos, timeout=0))  # fmt: skip
    assert after["extensions"]["to_device"]["events"] == []

    # Olm: the pre-key message starts a session on the claimed one-time key.
    olm_content = to_device[0]["content"]
    bob_identity = account.identity_keys
    assert olm_content["algorithm"] == OLM
    assert olm_content["sender_key"] == alice_keys["curve25519"]
    ciphertext = olm_content["ciphertext"][bob_identity["curve25519"]]
    assert ciphertext["type"] == 0
    prekey = olm.OlmPreKeyMessage(ciphertext["body"])
    session = olm.InboundSession(account, prekey, olm_content["sender_key"])
    room_key = json.loads(session.decrypt(prekey))
    account.remove_one_time_keys(session)
    assert room_key["type"] == "m.room_key" and room_key["sender"] == alice.user_id
    assert room_key["recipient"] == bob.user_id
    assert room_key["recipient_keys"] == {"ed25519": bob_identity["ed25519"]}
    assert room_key["keys"] == {"ed25519": alice_keys["ed25519"]}
    key = room_key["content"]
    assert key["algorithm"] == MEGOLM and key["room_id"] == room_id

    # Megolm: the room key decrypts the timeline event.
    megolm = timeline[0]["content"]
    assert megolm["algorithm"] == MEGOLM and megolm["session_id"] == key["session_id"]
    group = olm.InboundGroupSession(key["session_key"])
    assert group.id == key["session_id"]
    decrypted, index = group.decrypt(megolm["ciphertext"])
    assert index == 0
    event = json.loads(decrypted)
    assert event["room_id"] == room_id and event["type"] == "m.room.message"
    assert event["content"]["body"] == plaintext


def test_banned_rooms_listed_only_if_once_joined(alice: Client, bob: Client) -> None:
    was_in = create_room(alice, name="Was in")
    never_in = create_room(alice, name="Never in")
    join(bob, was_in)
    for room_id in (was_in, never_in):
        ban = alice.post(f"rooms/{q(room_id)}/ban", {"user_id": bob.user_id, "reason": "spam"})
        assert ban.status == 200, ban
    answer = ok(sliding(bob, {"lists": ROOM_LIST}))
    assert answer["lists"]["all"]["count"] == 1
    assert list(answer["rooms"]) == [was_in] and answer["rooms"][was_in]["membership"] == "ban"


def test_the_msc_example_request(alice: Client, bob: Client) -> None:
    """MSC4186's example request, in its final dialect on the stable path: a DM list with
    lazy members and the create event, plus a subscription to everything of one room."""
    dm = create_room(alice, preset="trusted_private_chat", is_direct=True, invite=[bob.user_id])
    join(bob, dm)
    assert bob.put(f"user/{q(bob.user_id or '')}/account_data/m.direct",
                   {alice.user_id: [dm]}).status == 200  # fmt: skip
    other = create_room(alice, name="Subscribed")
    join(bob, other)
    send(alice, dm, "in the dm")
    body = {
        "conn_id": "main",
        "lists": {"foo-list": {
            "range": [0, 99],
            "required_state": {"include": [{"type": "m.room.create", "state_key": ""}],
                               "lazy_members": True},
            "timeline_limit": 10,
            "filters": {"is_dm": True},
        }},
        "room_subscriptions": {other: {"required_state": {"include": [{}]}, "timeline_limit": 10}},
    }  # fmt: skip
    answer = ok(sliding(bob, body, path=V4))
    assert answer["lists"] == {"foo-list": {"count": 1}}
    assert set(answer["rooms"]) == {dm, other}
    dm_entry = answer["rooms"][dm]
    assert dm_entry["lists"] == ["foo-list"] and dm_entry["is_dm"] is True
    assert "name" not in dm_entry and [h["user_id"] for h in dm_entry["heroes"]] == [alice.user_id]
    state = {(e["type"], e["state_key"]) for e in dm_entry["required_state"]}
    assert state == {("m.room.create", ""), ("m.room.member", alice.user_id),
                     ("m.room.member", bob.user_id)}  # fmt: skip
    assert dm_entry["timeline_events"][-1]["content"]["body"] == "in the dm"
    subscribed = answer["rooms"][other]
    assert "lists" not in subscribed and subscribed["name"] == "Subscribed"
    assert ("m.room.power_levels", "") in {
        (e["type"], e["state_key"]) for e in subscribed["required_state"]}  # fmt: skip
    # The position comes in the body too; an unchanged room list waits, then answers the same.
    again = ok(sliding(bob, {**body, "pos": answer["pos"], "timeout": 200}, path=V4))
    assert again["rooms"] == {} and again["pos"] == answer["pos"]
