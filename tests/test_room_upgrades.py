"""Room upgrades: POST /rooms/{id}/upgrade between every pair of room versions."""

from __future__ import annotations

import itertools
import secrets

import pytest

from tests.harness import Client, ServerProcess, create_room, join, new_user, q

VERSIONS = [str(v) for v in range(1, 13)]


def state_of(client: Client, room_id: str) -> dict[tuple[str, str], dict[str, object]]:
    resp = client.get(f"rooms/{q(room_id)}/state")
    assert resp.status == 200, resp
    return {(e["type"], e["state_key"]): e for e in resp.body}


def test_upgrade_carries_the_room_over(alice: Client, bob: Client, server: ServerProcess) -> None:
    localpart = "upgraded" + secrets.token_hex(4)
    encryption = {"type": "m.room.encryption", "state_key": "",
                  "content": {"algorithm": "m.megolm.v1.aes-sha2"}}  # fmt: skip
    room_id = create_room(alice, preset="public_chat", room_version="10", name="Old name",
                          topic="Old topic", room_alias_name=localpart, visibility="public",
                          initial_state=[encryption])  # fmt: skip
    join(bob, room_id)
    carol = new_user(server)
    join(carol, room_id)
    assert alice.post(f"rooms/{q(room_id)}/ban", {"user_id": carol.user_id}).status == 200
    levels = alice.get(f"rooms/{q(room_id)}/state/m.room.power_levels").body
    levels["users"][bob.user_id] = 50
    alice.put(f"rooms/{q(room_id)}/state/m.room.power_levels", levels)

    refused = bob.post(f"rooms/{q(room_id)}/upgrade", {"new_version": "12"})
    assert refused.status == 403
    unknown = alice.post(f"rooms/{q(room_id)}/upgrade", {"new_version": "99"})
    assert unknown.status == 400 and unknown.body["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"

    resp = alice.post(f"rooms/{q(room_id)}/upgrade", {"new_version": "12"})
    assert resp.status == 200, resp
    new_room = resp.body["replacement_room"]
    old = state_of(alice, room_id)
    tombstone = old[("m.room.tombstone", "")]["content"]
    assert tombstone["replacement_room"] == new_room  # type: ignore[index]
    new = state_of(alice, new_room)
    create = new[("m.room.create", "")]["content"]
    assert create["predecessor"]["room_id"] == room_id  # type: ignore[index]
    assert create["room_version"] == "12"  # type: ignore[index]
    for key in (("m.room.name", ""), ("m.room.topic", ""), ("m.room.encryption", ""),
                ("m.room.join_rules", ""), ("m.room.history_visibility", "")):  # fmt: skip
        assert new[key]["content"] == old[key]["content"], key
    new_levels = new[("m.room.power_levels", "")]["content"]
    assert new_levels["users"] == {bob.user_id: 50}  # type: ignore[index]  # alice: creator
    assert new[("m.room.member", carol.user_id)]["content"]["membership"] == "ban"  # type: ignore[index]
    # The alias now leads to the new room, which carries it as canonical.
    alias = f"#{localpart}:{server.server_name}"
    assert alice.get(f"directory/room/{q(alias)}").body["room_id"] == new_room
    assert new[("m.room.canonical_alias", "")]["content"] == {"alias": alias}
    # The old room is silenced: bob (50) may no longer speak there.
    said = bob.put(f"rooms/{q(room_id)}/send/m.room.message/late", {"msgtype": "m.text",
                   "body": "late"})  # fmt: skip
    assert said.status == 200  # 50 >= the new threshold of 50
    plain = new_user(server)
    assert plain.post(f"join/{q(room_id)}", {}).status == 200
    muted = plain.put(f"rooms/{q(room_id)}/send/m.room.message/x", {"msgtype": "m.text",
                      "body": "x"})  # fmt: skip
    assert muted.status == 403
    assert plain.post(f"join/{q(new_room)}", {}).status == 200  # public: anyone may follow
    room_list = alice.get("publicRooms", params={"limit": "500"}).body["chunk"]
    assert new_room in {r["room_id"] for r in room_list}


def test_invite_only_rooms_reinvite_their_members(alice: Client, bob: Client) -> None:
    room_id = create_room(alice, preset="private_chat", is_direct=True, invite=[bob.user_id])
    join(bob, room_id)
    new_room = alice.post(f"rooms/{q(room_id)}/upgrade", {"new_version": "12"}).body[
        "replacement_room"
    ]
    invites = bob.get("sync", params={"timeout": "0"}).body["rooms"]["invite"]
    assert new_room in invites


@pytest.mark.parametrize(
    "old,new", [(a, b) for a, b in itertools.product(VERSIONS, VERSIONS) if a != b]
)
def test_upgrade_between_every_pair_of_versions(alice: Client, old: str, new: str) -> None:
    room_id = create_room(alice, room_version=old, name=f"v{old}")
    resp = alice.post(f"rooms/{q(room_id)}/upgrade", {"new_version": new})
    assert resp.status == 200, resp
    new_room = resp.body["replacement_room"]
    state = state_of(alice, new_room)
    assert state[("m.room.create", "")]["content"]["room_version"] == new  # type: ignore[index]
    assert state[("m.room.name", "")]["content"] == {"name": f"v{old}"}
    sent = alice.put(f"rooms/{q(new_room)}/send/m.room.message/t", {"msgtype": "m.text",
                     "body": "works"})  # fmt: skip
    assert sent.status == 200, sent
