"""Simplified sliding sync (MSC4186) over real HTTP: lists, subscriptions, incremental
answers, required state, long-polls, extensions, positions surviving a restart."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.harness import Client, Response, create_room, join, new_user, q
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
    for pos, conn in (("999", "a"), ("garbage", "a"), (first["pos"], "other")):
        resp = sliding(alice, {"conn_id": conn, "lists": ROOM_LIST}, pos=pos)
        assert resp.status == 400 and resp.body["errcode"] == "M_UNKNOWN_POS", resp
    # Starting the connection again makes its old positions unknown.
    ok(sliding(alice, {"conn_id": "a", "lists": ROOM_LIST}))
    stale = sliding(alice, {"conn_id": "a", "lists": ROOM_LIST}, pos=first["pos"])
    assert stale.status == 400 and stale.body["errcode"] == "M_UNKNOWN_POS"
    bad: list[dict[str, Any]] = [{"lists": {"x": {"ranges": [[5, 1]], "timeline_limit": 1}}},
                 {"lists": {"x": {"timeline_limit": -1}}}, {"lists": []},
                 {"room_subscriptions": {"!r:x": {"timeline_limit": 1, "required_state": [["a"]]}}},
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
