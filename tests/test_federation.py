"""Federation between our own servers over loopback TLS (a CA made by the test): keys,
request authentication, joins both ways, messages, typing, receipts, invites, leaving, and
a server that was down catching up."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
import requests
from signedjson.key import decode_verify_key_bytes, read_signing_keys
from signedjson.sign import verify_signed_json
from unpaddedbase64 import decode_base64

from crypto.request_signing import sign_request
from rooms.events import add_content_hash, compute_event_id, sign_event
from rooms.versions import get_room_version
from tests.federation_harness import (
    FederationCA,
    bodies_in,
    make_federating_server,
    wait_until,
)
from tests.harness import Client, ServerProcess, create_room, new_user, q
from tests.test_shared_secret_registration import shared_secret_register


def fed_get(server: ServerProcess, ca: FederationCA, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(
        server._extra["federation_url"] + path, verify=ca.ca_path, timeout=10, **kwargs
    )


def signing_key_of(server: ServerProcess) -> Any:
    with open(f"{server.directory}/signing.key", encoding="utf-8") as f:
        return read_signing_keys(f)[0]


def signed_get(
    target: ServerProcess, ca: FederationCA, path: str, origin: ServerProcess, destination: str
) -> requests.Response:
    header = sign_request("GET", path, origin.server_name, destination, None,
                          signing_key_of(origin))  # fmt: skip
    return fed_get(target, ca, path, headers={"Authorization": header})


# Keys and request authentication


def test_server_keys_are_self_signed(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, _ = servers
    resp = fed_get(hs1, ca, "/_matrix/key/v2/server")
    assert resp.status_code == 200
    body = resp.json()
    assert body["server_name"] == hs1.server_name
    assert body["valid_until_ts"] > 0
    ((key_id, key),) = body["verify_keys"].items()
    verify_key = decode_verify_key_bytes(key_id, decode_base64(key["key"]))
    verify_signed_json(body, hs1.server_name, verify_key)


def test_notary_serves_another_servers_keys_signed_by_both(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, hs2 = servers
    resp = requests.post(
        hs1._extra["federation_url"] + "/_matrix/key/v2/query",
        json={"server_keys": {hs2.server_name: {}}},
        verify=ca.ca_path,
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    (answer,) = resp.json()["server_keys"]
    assert answer["server_name"] == hs2.server_name
    assert set(answer["signatures"]) == {hs1.server_name, hs2.server_name}
    own = fed_get(hs1, ca, "/_matrix/key/v2/server").json()
    ((key_id, key),) = own["verify_keys"].items()
    verify_signed_json(answer, hs1.server_name, decode_verify_key_bytes(key_id,
                       decode_base64(key["key"])))  # fmt: skip


def test_unsigned_and_badly_signed_requests_are_401(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, hs2 = servers
    path = "/_matrix/federation/v1/query/profile?user_id=%40nobody%3Ax"
    unsigned = fed_get(hs1, ca, path)
    assert unsigned.status_code == 401
    assert unsigned.json()["errcode"] == "M_UNAUTHORIZED"
    wrong_destination = signed_get(hs1, ca, path, hs2, "elsewhere.example")
    assert wrong_destination.status_code == 401
    good = signed_get(hs1, ca, path, hs2, hs1.server_name)
    assert good.status_code == 404  # authenticated: the user simply does not exist
    assert good.json()["errcode"] == "M_NOT_FOUND"
    tampered = signed_get(hs1, ca, path, hs2, hs1.server_name).request.headers["Authorization"]
    tampered = tampered.replace('sig="', 'sig="AAAA')
    bad = fed_get(hs1, ca, path, headers={"Authorization": tampered})
    assert bad.status_code == 401
    garbage = fed_get(hs1, ca, path, headers={"Authorization": "X-Matrix nonsense"})
    assert garbage.status_code == 401


def test_profile_query_over_federation(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, hs2 = servers
    alice = new_user(hs1)
    path = f"/_matrix/federation/v1/query/profile?user_id={q(alice.user_id or '')}"
    resp = signed_get(hs1, ca, path, hs2, hs1.server_name)
    assert resp.status_code == 200, resp.text
    assert resp.json()["displayname"] == (alice.user_id or "")[1:].split(":")[0]


# Rooms across servers


def sync_room_events(
    client: Client, room_id: str, since: str | None = None
) -> tuple[list[Any], str]:
    params = {"timeout": "0"}
    if since:
        params["since"] = since
    resp = client.get("sync", params=params)
    assert resp.status == 200, resp
    room = resp.body["rooms"]["join"].get(room_id, {})
    return room.get("timeline", {}).get("events", []), resp.body["next_batch"]


def test_remote_user_joins_and_both_sides_talk(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice, name="Across servers")
    resp = bob.post(f"join/{q(room_id)}", {}, params={"server_name": hs1.server_name})
    assert resp.status == 200, resp
    assert resp.body["room_id"] == room_id
    # Both servers see bob joined.
    members = alice.get(f"rooms/{q(room_id)}/joined_members").body["joined"]
    assert set(members) == {alice.user_id, bob.user_id}
    state = bob.get(f"rooms/{q(room_id)}/state/m.room.name")
    assert state.status == 200, state
    assert state.body == {"name": "Across servers"}

    alice.put(f"rooms/{q(room_id)}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi bob"})
    wait_until(lambda: "hi bob" in bodies_in(bob, room_id), what="alice's message on hs2")
    bob.put(f"rooms/{q(room_id)}/send/m.room.message/t2",
            {"msgtype": "m.text", "body": "hi alice"})  # fmt: skip
    wait_until(lambda: "hi alice" in bodies_in(alice, room_id), what="bob's message on hs1")
    # Same event IDs on both sides, in the same order.
    assert bodies_in(alice, room_id)[-2:] == ["hi bob", "hi alice"]
    assert bodies_in(bob, room_id)[-2:] == ["hi bob", "hi alice"]
    # hs1's operator sees hs2 as a destination sharing this room.
    admin = shared_secret_register(hs1, admin=True)
    path = f"/_synapse/admin/v1/federation/destinations/{q(hs2.server_name)}"
    destination = admin.get(path)
    assert destination.status == 200, destination
    assert destination.body["destination"] == hs2.server_name
    rooms = admin.get(f"{path}/rooms").body
    assert room_id in [r["room_id"] for r in rooms["rooms"]] and rooms["total"] >= 1
    assert admin.get("/_synapse/admin/v1/federation/destinations/nowhere.test/rooms").status == 404
    search = {"destination": hs2.server_name[:6], "order_by": "failure_ts"}
    listed = admin.get("/_synapse/admin/v1/federation/destinations", params=search)
    assert hs2.server_name in [d["destination"] for d in listed.body["destinations"]], listed
    none = admin.get("/_synapse/admin/v1/federation/destinations", params={"destination": "zz"})
    assert none.body == {"destinations": [], "total": 0}


def test_local_user_joins_remote_room_by_alias(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice, room_alias_name="fedalias" + (alice.user_id or "")[1:6])
    alias = f"#fedalias{(alice.user_id or '')[1:6]}:{hs1.server_name}"
    resp = bob.post(f"join/{q(alias)}", {})
    assert resp.status == 200, resp
    assert resp.body["room_id"] == room_id
    events, _ = sync_room_events(bob, room_id)
    assert any(e["type"] == "m.room.member" and e["state_key"] == bob.user_id for e in events)


def test_typing_and_receipts_cross(servers: tuple[ServerProcess, ServerProcess]) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice)
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    resp = alice.put(f"rooms/{q(room_id)}/typing/{q(alice.user_id or '')}",
                     {"typing": True, "timeout": 20000})  # fmt: skip
    assert resp.status == 200, resp

    def bob_sees_typing() -> bool:
        body = bob.get("sync", params={"timeout": "0"}).body
        room = body["rooms"]["join"].get(room_id, {})
        return any(
            e["type"] == "m.typing" and alice.user_id in e["content"]["user_ids"]
            for e in room.get("ephemeral", {}).get("events", [])
        )

    wait_until(bob_sees_typing, what="alice typing, seen on hs2")
    sent = bob.put(f"rooms/{q(room_id)}/send/m.room.message/r1", {"msgtype": "m.text",
                   "body": "read me"})  # fmt: skip
    event_id = sent.body["event_id"]
    wait_until(lambda: "read me" in bodies_in(alice, room_id), what="bob's message on hs1")
    assert alice.post(f"rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {}).status == 200

    def bob_sees_receipt() -> bool:
        body = bob.get("sync", params={"timeout": "0"}).body
        room = body["rooms"]["join"].get(room_id, {})
        for e in room.get("ephemeral", {}).get("events", []):
            if e["type"] == "m.receipt" and alice.user_id in json.dumps(e["content"]):
                return event_id in e["content"]
        return False

    wait_until(bob_sees_receipt, what="alice's read receipt, seen on hs2")


def test_invite_remote_user_then_join_and_reject(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    hs1, hs2 = servers
    alice, carol = new_user(hs1), new_user(hs2)
    room_id = create_room(alice, preset="private_chat", name="Invite only")
    resp = alice.post(f"rooms/{q(room_id)}/invite", {"user_id": carol.user_id})
    assert resp.status == 200, resp

    def carol_invited() -> Any:
        body = carol.get("sync", params={"timeout": "0"}).body
        return body["rooms"]["invite"].get(room_id)

    invite = wait_until(carol_invited, what="the invite on hs2")
    names = [e for e in invite["invite_state"]["events"] if e["type"] == "m.room.name"]
    assert names and names[0]["content"]["name"] == "Invite only"
    resp = carol.post(f"join/{q(room_id)}", {})
    assert resp.status == 200, resp
    members = alice.get(f"rooms/{q(room_id)}/joined_members").body["joined"]
    assert carol.user_id in members

    # A second invite, rejected: the leave reaches the room's server.
    other = create_room(alice, preset="private_chat")
    assert alice.post(f"rooms/{q(other)}/invite", {"user_id": carol.user_id}).status == 200
    wait_until(lambda: carol.get("sync", params={"timeout": "0"}).body["rooms"]["invite"]
               .get(other), what="the second invite")  # fmt: skip
    resp = carol.post(f"rooms/{q(other)}/leave", {})
    assert resp.status == 200, resp
    member = alice.get(f"rooms/{q(other)}/state/m.room.member/{q(carol.user_id or '')}")
    assert member.body["membership"] == "leave"


def test_remote_leave_reaches_the_room(servers: tuple[ServerProcess, ServerProcess]) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice)
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    assert bob.post(f"rooms/{q(room_id)}/leave", {}).status == 200

    def alice_sees_leave() -> bool:
        member = alice.get(f"rooms/{q(room_id)}/state/m.room.member/{q(bob.user_id or '')}")
        return member.body.get("membership") == "leave"

    wait_until(alice_sees_leave, what="bob's leave on hs1")


def test_history_visibility_holds_for_the_other_server(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    """A server whose users joined later does not get events from before, in a room with
    joined-only history; and gets nothing at all of a room it has no member in."""
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice, initial_state=[{
        "type": "m.room.history_visibility", "state_key": "",
        "content": {"history_visibility": "joined"},
    }])  # fmt: skip
    secret = alice.put(f"rooms/{q(room_id)}/send/m.room.message/s1",
                       {"msgtype": "m.text", "body": "before bob"}).body["event_id"]  # fmt: skip
    path = f"/_matrix/federation/v1/event/{q(secret)}"
    outsider = signed_get(hs1, ca, path, hs2, hs1.server_name)
    assert outsider.status_code == 403
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    after_join = signed_get(hs1, ca, path, hs2, hs1.server_name)
    assert after_join.status_code == 404
    assert "before bob" not in bodies_in(bob, room_id)


def test_server_down_while_messages_are_sent_catches_up(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    """Nothing queued is lost when the destination is down, nor when the sender restarts
    before it could deliver."""
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice)
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    hs2.stop(cleanup=False)
    for i in range(3):
        alice.put(f"rooms/{q(room_id)}/send/m.room.message/down{i}",
                  {"msgtype": "m.text", "body": f"while down {i}"})  # fmt: skip
    hs1.restart()  # the queue survives the sender's own restart too
    hs2.start()
    wait_until(
        lambda: bodies_in(bob, room_id)[-3:] == [f"while down {i}" for i in range(3)],
        timeout=30,
        what="the messages sent while hs2 was down",
    )


def test_netsplit_fork_is_merged_by_state_resolution(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    """Both sides change the room while they cannot reach each other; once they can, each
    holds both branches and both agree on the room's state."""
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice, name="Before the split")
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    levels = alice.get(f"rooms/{q(room_id)}/state/m.room.power_levels").body
    levels["users"][bob.user_id] = 50
    assert alice.put(f"rooms/{q(room_id)}/state/m.room.power_levels", levels).status == 200
    wait_until(lambda: bob.get(f"rooms/{q(room_id)}/state/m.room.power_levels").body
               .get("users", {}).get(bob.user_id) == 50, what="bob's power on hs2")  # fmt: skip

    hs1.stop(cleanup=False)
    bob.put(f"rooms/{q(room_id)}/send/m.room.message/split-b", {"msgtype": "m.text",
            "body": "bob during the split"})  # fmt: skip
    assert bob.put(f"rooms/{q(room_id)}/state/m.room.topic", {"topic": "bob's topic"}).status == 200
    hs2.stop(cleanup=False)
    hs1.start()
    alice.put(f"rooms/{q(room_id)}/send/m.room.message/split-a", {"msgtype": "m.text",
              "body": "alice during the split"})  # fmt: skip
    assert (
        alice.put(f"rooms/{q(room_id)}/state/m.room.name", {"name": "Alice's name"}).status == 200
    )
    hs2.start()

    for client in (alice, bob):
        wait_until(
            lambda client=client: (
                {"alice during the split", "bob during the split"}
                <= set(bodies_in(client, room_id))
            ),
            timeout=30,
            what="both branches on both servers",
        )

    def same_state() -> bool:
        views = []
        for client in (alice, bob):
            state = client.get(f"rooms/{q(room_id)}/state").body
            views.append({(e["type"], e["state_key"]): e["event_id"] for e in state})
        return views[0] == views[1]

    wait_until(same_state, timeout=30, what="the same resolved state on both servers")
    name = alice.get(f"rooms/{q(room_id)}/state/m.room.name").body
    topic = alice.get(f"rooms/{q(room_id)}/state/m.room.topic").body
    assert name == {"name": "Alice's name"}
    assert topic == {"topic": "bob's topic"}
    # A message after the merge points at both branches and reaches the other side.
    alice.put(f"rooms/{q(room_id)}/send/m.room.message/merged", {"msgtype": "m.text",
              "body": "after the merge"})  # fmt: skip
    wait_until(lambda: "after the merge" in bodies_in(bob, room_id), what="the merge message")


@pytest.mark.parametrize("version", [str(v) for v in range(1, 13)])
def test_every_room_version_works_across_servers(
    servers: tuple[ServerProcess, ServerProcess], version: str
) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice, room_version=version)
    resp = bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name})
    assert resp.status == 200, resp
    sent = alice.put(f"rooms/{q(room_id)}/send/m.room.message/v{version}",
                     {"msgtype": "m.text", "body": f"v{version} from hs1"})  # fmt: skip
    assert sent.status == 200, sent
    wait_until(lambda: f"v{version} from hs1" in bodies_in(bob, room_id), what="hs1 -> hs2")
    reply = bob.put(f"rooms/{q(room_id)}/send/m.room.message/r{version}",
                    {"msgtype": "m.text", "body": f"v{version} from hs2"})  # fmt: skip
    assert reply.status == 200, reply
    wait_until(lambda: f"v{version} from hs2" in bodies_in(alice, room_id), what="hs2 -> hs1")
    # A redaction crosses too, and both sides then serve the redacted form.
    redact = bob.put(f"rooms/{q(room_id)}/redact/{q(reply.body['event_id'])}/x{version}", {})
    assert redact.status == 200, redact

    def redacted_on_hs1() -> bool:
        event = alice.get(f"rooms/{q(room_id)}/event/{q(reply.body['event_id'])}")
        return event.status == 200 and "body" not in event.body["content"]

    wait_until(redacted_on_hs1, what="the redaction on hs1")


def test_clients_read_remote_profiles_and_directories(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    assert alice.put(f"profile/{q(alice.user_id or '')}/displayname",
                     {"displayname": "Alice on hs1"}).status == 200  # fmt: skip
    profile = bob.get(f"profile/{q(alice.user_id or '')}")
    assert profile.status == 200, profile
    assert profile.body["displayname"] == "Alice on hs1"
    missing = bob.get(f"profile/{q('@nobody:' + hs1.server_name)}")
    assert missing.status == 404
    room_id = create_room(alice, visibility="public", name="Listed on hs1")
    listed = bob.get("publicRooms", params={"server": hs1.server_name, "limit": "500"})
    assert listed.status == 200, listed
    assert room_id in {r["room_id"] for r in listed.body["chunk"]}
    searched = bob.post("publicRooms", {"filter": {"generic_search_term": "Listed on hs1"}},
                        params={"server": hs1.server_name})  # fmt: skip
    assert searched.status == 200, searched
    assert [r["room_id"] for r in searched.body["chunk"]] == [room_id]


def test_history_from_before_the_join_is_backfilled_in_order(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice, name="Old history")
    for i in range(25):
        alice.put(f"rooms/{q(room_id)}/send/m.room.message/old{i}",
                  {"msgtype": "m.text", "body": f"old {i}"})  # fmt: skip
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    seen: list[str] = []
    token = None
    for _ in range(20):  # page back ten at a time, as a client scrolling up does
        params = {"dir": "b", "limit": "10"}
        if token:
            params["from"] = token
        page = bob.get(f"rooms/{q(room_id)}/messages", params=params)
        assert page.status == 200, page
        seen += [e["content"].get("body") for e in page.body["chunk"]
                 if e["type"] == "m.room.message"]  # fmt: skip
        token = page.body.get("end")
        if not token:
            break
    assert list(reversed(seen)) == [f"old {i}" for i in range(25)]
    # The same history read again comes from our own store, in the same order.
    again = bob.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "100"})
    bodies = [e["content"].get("body") for e in again.body["chunk"]
              if e["type"] == "m.room.message"]  # fmt: skip
    assert list(reversed(bodies)) == [f"old {i}" for i in range(25)]


def test_joined_history_is_not_backfilled_to_a_server_that_may_not_see_it(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice, initial_state=[{
        "type": "m.room.history_visibility", "state_key": "",
        "content": {"history_visibility": "joined"},
    }])  # fmt: skip
    alice.put(f"rooms/{q(room_id)}/send/m.room.message/hidden",
              {"msgtype": "m.text", "body": "before bob joined"})  # fmt: skip
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    page = bob.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "50"})
    assert page.status == 200, page
    assert "before bob joined" not in json.dumps(page.body)


def test_knock_on_a_remote_room_then_get_let_in(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice, preset="private_chat", room_version="10", name="Knock here",
                          initial_state=[{"type": "m.room.join_rules", "state_key": "",
                                          "content": {"join_rule": "knock"}}])  # fmt: skip
    resp = bob.post(f"knock/{q(room_id)}", {"reason": "let me in"},
                    params={"via": hs1.server_name})  # fmt: skip
    assert resp.status == 200, resp
    member = alice.get(f"rooms/{q(room_id)}/state/m.room.member/{q(bob.user_id or '')}")
    assert member.body["membership"] == "knock"
    knocked = bob.get("sync", params={"timeout": "0"}).body["rooms"]["knock"]
    names = [e for e in knocked[room_id]["knock_state"]["events"] if e["type"] == "m.room.name"]
    assert names and names[0]["content"]["name"] == "Knock here"
    assert alice.post(f"rooms/{q(room_id)}/invite", {"user_id": bob.user_id}).status == 200
    wait_until(lambda: bob.get("sync", params={"timeout": "0"}).body["rooms"]["invite"]
               .get(room_id), what="the invite after the knock")  # fmt: skip
    assert bob.post(f"join/{q(room_id)}", {}).status == 200
    assert bob.user_id in alice.get(f"rooms/{q(room_id)}/joined_members").body["joined"]


def test_restricted_room_joined_through_the_authorising_server(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    space = create_room(alice, preset="public_chat")
    assert bob.post(f"join/{q(space)}", {}, params={"via": hs1.server_name}).status == 200
    room_id = create_room(alice, preset="private_chat", room_version="10", initial_state=[{
        "type": "m.room.join_rules", "state_key": "",
        "content": {"join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}]},
    }])  # fmt: skip
    outsider = new_user(hs2)
    refused = outsider.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name})
    assert refused.status == 403, refused
    resp = bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name})
    assert resp.status == 200, resp
    member = alice.get(f"rooms/{q(room_id)}/state/m.room.member/{q(bob.user_id or '')}")
    assert member.body["membership"] == "join"
    assert member.body["join_authorised_via_users_server"] == alice.user_id


def test_server_acl_keeps_a_banned_server_out(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice)
    acl = {"allow": ["*"], "deny": [hs2.server_name.split(":")[0] + "*"],
           "allow_ip_literals": False}  # fmt: skip
    assert alice.put(f"rooms/{q(room_id)}/state/m.room.server_acl", acl).status == 200
    resp = bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name})
    assert resp.status == 403, resp


def send_forged_transaction(
    target: ServerProcess, ca: FederationCA, origin: ServerProcess, pdus: list[Any]
) -> requests.Response:
    """PUT /send as ``origin`` would, with whatever PDUs the test made."""
    body = {"origin": origin.server_name, "origin_server_ts": 0, "pdus": pdus, "edus": []}
    path = f"/_matrix/federation/v1/send/forged{secrets.token_hex(4)}"
    header = sign_request("PUT", path, origin.server_name, target.server_name, body,
                          signing_key_of(origin))  # fmt: skip
    url = target._extra["federation_url"] + path
    return requests.put(
        url, json=body, headers={"Authorization": header}, verify=ca.ca_path, timeout=10
    )


def test_event_allowed_before_a_ban_but_not_now_is_soft_failed(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    """A server keeps sending for a user banned meanwhile, pointing at events from before
    the ban: the event is accepted into storage but never shown."""
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice)
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    state = {(e["type"], e["state_key"]): e for e in alice.get(f"rooms/{q(room_id)}/state").body}
    bob_join = state[("m.room.member", bob.user_id)]
    power = state[("m.room.power_levels", "")]
    ban = alice.post(f"rooms/{q(room_id)}/ban", {"user_id": bob.user_id})
    assert ban.status == 200, ban
    version = get_room_version("12")
    assert version is not None
    event: dict[str, Any] = {
        "type": "m.room.message", "room_id": room_id, "sender": bob.user_id,
        "content": {"msgtype": "m.text", "body": "sent after the ban"},
        "prev_events": [bob_join["event_id"]],
        "auth_events": [power["event_id"], bob_join["event_id"]],
        "depth": 100, "origin_server_ts": int(time.time() * 1000),
    }  # fmt: skip
    add_content_hash(event)
    sign_event(event, version, hs2.server_name, signing_key_of(hs2))
    resp = send_forged_transaction(hs1, ca, hs2, [event])
    assert resp.status_code == 200, resp.text
    ((event_id, result),) = resp.json()["pdus"].items()
    assert result == {}
    assert event_id == compute_event_id(event, version)
    assert "sent after the ban" not in bodies_in(alice, room_id)
    assert alice.get(f"rooms/{q(room_id)}/event/{q(event_id)}").status == 404
    # A later event of ours does not build on it.
    sent = alice.put(f"rooms/{q(room_id)}/send/m.room.message/after-soft-fail",
                     {"msgtype": "m.text", "body": "still here"})  # fmt: skip
    ours = alice.get(f"rooms/{q(room_id)}/event/{q(sent.body['event_id'])}")
    assert ours.status == 200


def test_forged_pdu_with_a_bad_signature_is_dropped(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice)
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    state = {(e["type"], e["state_key"]): e for e in alice.get(f"rooms/{q(room_id)}/state").body}
    bob_join = state[("m.room.member", bob.user_id)]
    version = get_room_version("12")
    assert version is not None
    event: dict[str, Any] = {
        "type": "m.room.message", "room_id": room_id, "sender": bob.user_id,
        "content": {"msgtype": "m.text", "body": "tampered"},
        "prev_events": [bob_join["event_id"]],
        "auth_events": [state[("m.room.power_levels", "")]["event_id"], bob_join["event_id"]],
        "depth": 100, "origin_server_ts": int(time.time() * 1000),
    }  # fmt: skip
    add_content_hash(event)
    sign_event(event, version, hs2.server_name, signing_key_of(hs2))
    event["content"]["body"] = "changed after signing"  # the hash no longer matches
    event["depth"] = 101  # and the signature no longer covers the event
    resp = send_forged_transaction(hs1, ca, hs2, [event])
    assert resp.status_code == 200, resp.text
    (result,) = resp.json()["pdus"].values()
    assert "invalid" in result["error"]
    assert "changed after signing" not in bodies_in(alice, room_id)


def test_long_outage_catches_up_with_the_latest_events_and_state(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    """Past a backlog of 50, the sender sends the newest event per room and the receiver
    fills the gap itself (missing events, then the state before the event)."""
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice, name="Before the outage")
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    hs2.stop(cleanup=False)
    for i in range(60):
        alice.put(f"rooms/{q(room_id)}/send/m.room.message/outage{i}",
                  {"msgtype": "m.text", "body": f"outage {i}"})  # fmt: skip
        if i == 10:
            alice.put(f"rooms/{q(room_id)}/state/m.room.name", {"name": "Renamed in the outage"})
    hs2.start()
    # hs2 speaking to hs1 ends hs1's back-off at once (instead of at its next retry).
    bob.put(f"rooms/{q(room_id)}/typing/{q(bob.user_id or '')}", {"typing": True, "timeout": 1000})
    wait_until(lambda: "outage 59" in bodies_in(bob, room_id), timeout=40,
               what="the newest message after the outage")  # fmt: skip
    name = bob.get(f"rooms/{q(room_id)}/state/m.room.name")
    assert name.body == {"name": "Renamed in the outage"}


def test_presence_crosses_servers(servers: tuple[ServerProcess, ServerProcess]) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    room_id = create_room(alice)
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    resp = alice.put(f"presence/{q(alice.user_id or '')}/status",
                     {"presence": "unavailable", "status_msg": "lunch"})  # fmt: skip
    assert resp.status == 200, resp

    def bob_sees() -> bool:
        status = bob.get(f"presence/{q(alice.user_id or '')}/status")
        return status.status == 200 and status.body.get("status_msg") == "lunch"

    wait_until(bob_sees, what="alice's presence on hs2")


def test_space_hierarchy_and_timestamp_lookups_for_other_servers(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    space = create_room(alice, creation_content={"type": "m.space"}, name="Space")
    child = create_room(alice, name="Public child")
    hidden = create_room(alice, preset="private_chat", name="Private child")
    for room in (child, hidden):
        resp = alice.put(f"rooms/{q(space)}/state/m.space.child/{q(room)}",
                         {"via": [hs1.server_name]})  # fmt: skip
        assert resp.status == 200, resp
    path = f"/_matrix/federation/v1/hierarchy/{q(space)}"
    answer = signed_get(hs1, ca, path, hs2, hs1.server_name)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["room"]["room_id"] == space and body["room"]["name"] == "Space"
    assert [c["room_id"] for c in body["children"]] == [child]
    assert body["inaccessible_children"] == [hidden]

    assert bob.post(f"join/{q(child)}", {}, params={"via": hs1.server_name}).status == 200
    sent = alice.put(f"rooms/{q(child)}/send/m.room.message/ts1",
                     {"msgtype": "m.text", "body": "at a time"})  # fmt: skip
    event = alice.get(f"rooms/{q(child)}/event/{q(sent.body['event_id'])}").body
    path = (f"/_matrix/federation/v1/timestamp_to_event/{q(child)}"
            f"?ts={event['origin_server_ts']}&dir=b")  # fmt: skip
    found = signed_get(hs1, ca, path, hs2, hs1.server_name)
    assert found.status_code == 200, found.text
    assert found.json()["event_id"] == sent.body["event_id"]


def test_openid_token_checked_by_a_third_party(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    """A widget or integration manager gets an OpenID token from the user and asks the
    user's server who it belongs to."""
    hs1, _ = servers
    alice, bob = new_user(hs1), new_user(hs1)
    resp = alice.post(f"user/{q(alice.user_id or '')}/openid/request_token", {})
    assert resp.status == 200, resp
    assert resp.body["token_type"] == "Bearer"
    assert resp.body["matrix_server_name"] == hs1.server_name
    assert 0 < resp.body["expires_in"] <= 3600
    token = resp.body["access_token"]
    info = fed_get(hs1, ca, "/_matrix/federation/v1/openid/userinfo",
                   params={"access_token": token})  # fmt: skip
    assert info.status_code == 200, info.text
    assert info.json() == {"sub": alice.user_id}
    wrong = fed_get(hs1, ca, "/_matrix/federation/v1/openid/userinfo",
                    params={"access_token": token + "x"})  # fmt: skip
    assert wrong.status_code == 401
    assert wrong.json()["errcode"] == "M_UNKNOWN_TOKEN"
    other = bob.post(f"user/{q(alice.user_id or '')}/openid/request_token", {})
    assert other.status == 403
    # Only the hash is stored.
    from tests.harness import db_rows

    rows = db_rows(hs1, "SELECT token_hash FROM openid_tokens")
    assert rows and all(token not in row[0] for row in rows)


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as listeners do
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_server_found_through_its_well_known(db_kind: str, ca: FederationCA) -> None:
    """A server named plainly ``localhost`` (no port) is found the way the spec says: its
    https://localhost/.well-known/matrix/server delegates to the real federation port."""
    if not port_free(443):
        pytest.skip("port 443 is taken here; the well-known look-up needs it")
    from tests.harness import free_port, make_server

    federation_port, client_port = free_port(), free_port()
    tls = {"tls": True, "tls_certificate_path": ca.cert_path,
           "tls_private_key_path": ca.key_path, "bind_addresses": ["127.0.0.1"]}  # fmt: skip
    plain = make_server(db_kind, {
        "server_name": "localhost",
        "listeners": [
            {"port": client_port, "bind_addresses": ["127.0.0.1"], "resources": ["client"]},
            {"port": federation_port, "resources": ["federation"], **tls},
            {"port": 443, "resources": ["client"], **tls},
        ],
        "federation": {"ca_file": ca.ca_path, "ip_range_blacklist": []},
        "well_known": {"server_delegation": f"localhost:{federation_port}"},
    })  # fmt: skip
    plain.server_name = "localhost"
    plain.base_url = f"http://127.0.0.1:{client_port}"
    other = make_federating_server(db_kind, ca)
    plain.start()
    other.start()
    try:
        alice, bob = new_user(plain), new_user(other)
        room_id = create_room(alice)
        resp = bob.post(f"join/{q(room_id)}", {}, params={"via": "localhost"})
        assert resp.status == 200, resp
        profile = bob.get(f"profile/{q(alice.user_id or '')}")
        assert profile.status == 200, profile
    finally:
        plain.stop()
        other.stop()
