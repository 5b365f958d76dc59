"""What Element Web and other clients in use rely on, found by running them against us:
every token a client holds is accepted wherever a position goes, no base URL the server
cannot vouch for is advertised, /versions flags what clients check, new accounts have a
display name."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.harness import Client, ServerProcess, create_room, join, leave, new_user, q


def send_text(client: Client, room_id: str, body: str) -> str:
    resp = client.put(
        f"rooms/{q(room_id)}/send/m.room.message/{body.replace(' ', '-')}",
        {"msgtype": "m.text", "body": body},
    )
    assert resp.status == 200, resp
    return str(resp.body["event_id"])


def sync_token(client: Client) -> str:
    resp = client.get("sync", params={"timeout": "0"})
    assert resp.status == 200, resp
    return str(resp.body["next_batch"])


def member_ids(resp: Any) -> set[str]:
    assert resp.status == 200, resp
    return {e["state_key"] for e in resp.body["chunk"]}


# 1. Tokens from /sync wherever a position goes


def test_members_at_a_sync_token_as_element_asks_before_encrypting(
    alice: Client, bob: Client
) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    token = sync_token(alice)
    resp = alice.get(f"rooms/{q(room_id)}/members", params={"not_membership": "leave", "at": token})
    assert member_ids(resp) == {alice.user_id, bob.user_id}


def test_members_at_an_earlier_sync_token_is_the_membership_then(
    alice: Client, bob: Client, server: ServerProcess
) -> None:
    room_id = create_room(alice)
    before_bob = sync_token(alice)
    join(bob, room_id)
    carol = new_user(server)
    join(carol, room_id)
    leave(carol, room_id)
    at_before = alice.get(f"rooms/{q(room_id)}/members", params={"at": before_bob})
    assert member_ids(at_before) == {alice.user_id}
    now = alice.get(
        f"rooms/{q(room_id)}/members",
        params={"not_membership": "leave", "at": sync_token(alice)},
    )
    assert member_ids(now) == {alice.user_id, bob.user_id}


def test_members_at_a_later_token_never_shows_what_a_leaver_may_not_see(
    alice: Client, bob: Client, server: ServerProcess
) -> None:
    room_id = create_room(alice, preset="private_chat")
    alice.post(f"rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    join(bob, room_id)
    leave(bob, room_id)
    carol = new_user(server)
    alice.post(f"rooms/{q(room_id)}/invite", {"user_id": carol.user_id})
    join(carol, room_id)
    resp = bob.get(f"rooms/{q(room_id)}/members", params={"at": sync_token(alice)})
    assert carol.user_id not in member_ids(resp)


def test_messages_and_relations_accept_sync_tokens(alice: Client) -> None:
    room_id = create_room(alice)
    first = send_text(alice, room_id, "first")
    token = sync_token(alice)
    later = send_text(alice, room_id, "later")
    backwards = alice.get(
        f"rooms/{q(room_id)}/messages", params={"dir": "b", "from": token, "limit": "5"}
    )
    assert backwards.status == 200, backwards
    ids = [e["event_id"] for e in backwards.body["chunk"]]
    assert ids[0] == first and later not in ids
    forwards = alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "f", "from": token})
    assert [e["event_id"] for e in forwards.body["chunk"]] == [later]
    up_to = alice.get(
        f"rooms/{q(room_id)}/messages", params={"dir": "b", "to": token, "limit": "5"}
    )
    assert [e["event_id"] for e in up_to.body["chunk"]] == [later]
    relations = alice.get(
        f"/_matrix/client/v1/rooms/{q(room_id)}/relations/{q(first)}", params={"from": token}
    )
    assert relations.status == 200, relations
    threads = alice.get(f"/_matrix/client/v1/rooms/{q(room_id)}/threads", params={"from": token})
    assert threads.status == 200, threads


def test_notifications_accept_a_sync_token(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    send_text(alice, room_id, f"hello {bob.user_id}")
    token = sync_token(bob)
    send_text(alice, room_id, "after the token")
    resp = bob.get("notifications", params={"from": token})
    assert resp.status == 200, resp
    bodies = [n["event"]["content"]["body"] for n in resp.body["notifications"]]
    assert "after the token" not in bodies
    assert f"hello {bob.user_id}" in bodies


def test_garbage_positions_are_still_400(alice: Client) -> None:
    room_id = create_room(alice)
    for token in ("s1_2", "x12", "s", "s1_a_2_3", "s99999999999999999999"):
        resp = alice.get(f"rooms/{q(room_id)}/members", params={"at": token})
        assert resp.status == 400, (token, resp)
        assert resp.body["errcode"] == "M_INVALID_PARAM"


# Issue 10: a leaver in a world-readable room sees the state as it was when they left


def test_leaver_of_world_readable_room_sees_state_as_when_they_left(
    alice: Client, bob: Client, server: ServerProcess
) -> None:
    room_id = create_room(alice, initial_state=[
        {"type": "m.room.history_visibility", "state_key": "",
         "content": {"history_visibility": "world_readable"}},
    ])  # fmt: skip
    alice.put(f"rooms/{q(room_id)}/state/m.room.topic", {"topic": "before"})
    join(bob, room_id)
    leave(bob, room_id)
    alice.put(f"rooms/{q(room_id)}/state/m.room.topic", {"topic": "after bob left"})
    state = bob.get(f"rooms/{q(room_id)}/state")
    assert state.status == 200, state
    topics = [e["content"]["topic"] for e in state.body if e["type"] == "m.room.topic"]
    assert topics == ["before"]
    one = bob.get(f"rooms/{q(room_id)}/state/m.room.topic")
    assert one.body == {"topic": "before"}
    # Someone who was never in the room reads the world-readable room as it is now.
    stranger = new_user(server)
    now = stranger.get(f"rooms/{q(room_id)}/state/m.room.topic")
    assert now.body == {"topic": "after bob left"}


# 2. No base URL the server cannot vouch for


def login_body(client: Client) -> dict[str, Any]:
    resp = client.post(
        "login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": client.user_id},
            "password": "correct horse battery staple",
        },
        token=False,
    )
    assert resp.status == 200, resp
    return dict(resp.body)


def test_configured_public_baseurl_is_advertised(server: ServerProcess) -> None:
    user = new_user(server)
    body = login_body(user)
    assert body["well_known"] == {"m.homeserver": {"base_url": server.base_url + "/"}}
    resp = user.get("/.well-known/matrix/client", token=False)
    assert resp.body["m.homeserver"]["base_url"] == server.base_url + "/"


def test_without_public_baseurl_nothing_is_advertised(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory({"public_baseurl": None})
    user = new_user(server)
    body = login_body(user)
    assert "well_known" not in body
    # A second login works just the same (Element signs in again on a fresh browser).
    assert "access_token" in login_body(user)
    resp = user.get("/.well-known/matrix/client", token=False)
    assert resp.status == 404
    assert resp.body["errcode"] == "M_NOT_FOUND"


def test_generated_local_config_advertises_where_it_listens(tmp_path: Path) -> None:
    config_path = tmp_path / "homeserver.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "homeserver", "--generate-config", "--server-name", "localhost",
         "--public-baseurl", "http://127.0.0.1:8008/", "-c", str(config_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(config_path.read_text())
    assert config["public_baseurl"] == "http://127.0.0.1:8008/"
    assert config["listeners"][0]["port"] == 8008
    plain = tmp_path / "plain.yaml"
    subprocess.run(
        [sys.executable, "-m", "homeserver", "--generate-config", "--server-name", "example.org",
         "-c", str(plain)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "public_baseurl" not in yaml.safe_load(plain.read_text())


def test_run_server_script_generates_an_advertised_local_url() -> None:
    script = (Path(__file__).parent.parent / "scripts" / "run-server").read_text()
    assert '--public-baseurl "http://127.0.0.1:8008/"' in script


# 3. /versions flags that clients check


def test_versions_flags_cross_signing_and_served_features(client: Client) -> None:
    resp = client.get("/_matrix/client/versions", token=False)
    flags = resp.body["unstable_features"]
    assert flags["org.matrix.e2e_cross_signing"] is True
    assert flags["org.matrix.msc3916.stable"] is True
    assert flags["org.matrix.msc2285.stable"] is True
    # Nothing is flagged that is not served.
    assert all(value is True for value in flags.values())
    assert flags["org.matrix.simplified_msc3575"] is True  # sliding sync, for Element X
    assert flags["org.matrix.msc3814"] is True  # dehydrated devices are served


def test_public_rooms_room_types_filter(alice: Client, server: ServerProcess) -> None:
    space = create_room(alice, creation_content={"type": "m.space"}, visibility="public")
    plain = create_room(alice, visibility="public")
    spaces = alice.post("publicRooms", {"filter": {"room_types": ["m.space"]}, "limit": 500})
    ids = {r["room_id"] for r in spaces.body["chunk"]}
    assert space in ids and plain not in ids
    rooms = alice.post("publicRooms", {"filter": {"room_types": [None]}, "limit": 500})
    ids = {r["room_id"] for r in rooms.body["chunk"]}
    assert plain in ids and space not in ids
    bad = alice.post("publicRooms", {"filter": {"room_types": "m.space"}})
    assert bad.status == 400 and bad.body["errcode"] == "M_BAD_JSON"


# 4. A display name from the start


def test_new_account_has_its_localpart_as_display_name(client: Client) -> None:
    resp = client.register("displaynamed")
    assert resp.status == 200, resp
    profile = client.get(f"profile/{q(client.user_id or '')}")
    assert profile.body.get("displayname") == "displaynamed"
    room_id = create_room(client)
    member = client.get(f"rooms/{q(room_id)}/state/m.room.member/{q(client.user_id or '')}")
    assert member.body.get("displayname") == "displaynamed"


def test_localpart_display_name_can_be_switched_off(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory({"registration": {"localpart_as_displayname": False}})
    user = new_user(server)
    profile = user.get(f"profile/{q(user.user_id or '')}")
    assert "displayname" not in profile.body
