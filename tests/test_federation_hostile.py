"""A hostile server: every case must fail safe, with nothing stored or shown, and the
server still healthy. The "evil" server is one of ours whose signing key the test holds,
so it signs whatever the test makes, over real HTTP."""

from __future__ import annotations

import secrets
import time
from typing import Any

import requests
from signedjson.key import generate_signing_key

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
from tests.test_federation import send_forged_transaction, signing_key_of

V12 = get_room_version("12")
assert V12 is not None


def shared_room(
    hs1: ServerProcess, evil: ServerProcess
) -> tuple[Client, Client, str, dict[Any, Any]]:
    alice, mallory = new_user(hs1), new_user(evil)
    room_id = create_room(alice)
    resp = mallory.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name})
    assert resp.status == 200, resp
    state = {(e["type"], e["state_key"]): e for e in alice.get(f"rooms/{q(room_id)}/state").body}
    return alice, mallory, room_id, state


def message_from(
    user_id: str, room_id: str, state: dict[Any, Any], body: str, **extra: Any
) -> dict[str, Any]:
    join = state[("m.room.member", user_id)]
    event: dict[str, Any] = {
        "type": "m.room.message", "room_id": room_id, "sender": user_id,
        "content": {"msgtype": "m.text", "body": body},
        "prev_events": [join["event_id"]],
        "auth_events": [state[("m.room.power_levels", "")]["event_id"], join["event_id"]],
        "depth": 50, "origin_server_ts": int(time.time() * 1000),
    }  # fmt: skip
    event.update(extra)
    return event


def signed(event: dict[str, Any], server: ServerProcess, key: Any = None) -> dict[str, Any]:
    add_content_hash(event)
    sign_event(event, V12, server.server_name, key or signing_key_of(server))  # type: ignore[arg-type]
    return event


def put_signed(
    target: ServerProcess, ca: FederationCA, origin: ServerProcess, path: str, body: Any
) -> requests.Response:
    header = sign_request("PUT", path, origin.server_name, target.server_name, body,
                          signing_key_of(origin))  # fmt: skip
    url = target._extra["federation_url"] + path
    return requests.put(
        url, json=body, headers={"Authorization": header}, verify=ca.ca_path, timeout=10
    )


def pdu_result(resp: requests.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    (result,) = resp.json()["pdus"].values()
    return dict(result)


def assert_healthy(server: ServerProcess) -> None:
    assert requests.get(server.base_url + "/_matrix/client/versions", timeout=5).status_code == 200


def test_signature_by_a_key_the_origin_never_had(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, evil = servers
    alice, mallory, room_id, state = shared_room(hs1, evil)
    stranger_key = generate_signing_key("notreal")
    event = signed(message_from(mallory.user_id or "", room_id, state, "unknown key"), evil,
                   stranger_key)  # fmt: skip
    assert "invalid" in pdu_result(send_forged_transaction(hs1, ca, evil, [event]))["error"]
    assert "unknown key" not in bodies_in(alice, room_id)


def test_bad_content_hash_is_kept_redacted(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    """The signature covers the redacted form: content changed after signing keeps it
    valid, but the hash no longer matches, so only the redacted event is kept."""
    hs1, evil = servers
    alice, mallory, room_id, state = shared_room(hs1, evil)
    event = signed(message_from(mallory.user_id or "", room_id, state, "original text"), evil)
    event["content"]["body"] = "swapped in transit"
    assert pdu_result(send_forged_transaction(hs1, ca, evil, [event])) == {}
    event_id = compute_event_id(event, V12)
    served = alice.get(f"rooms/{q(room_id)}/event/{q(event_id)}")
    assert served.status == 200, served
    assert served.body["content"] == {}
    assert "swapped in transit" not in str(alice.get(f"rooms/{q(room_id)}/messages",
                                                     params={"dir": "b"}).body)  # fmt: skip


def test_event_failing_auth_is_rejected(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, evil = servers
    alice, mallory, room_id, state = shared_room(hs1, evil)
    event = message_from(mallory.user_id or "", room_id, state, "power grab")
    event.update({"type": "m.room.power_levels", "state_key": "",
                  "content": {"users": {mallory.user_id: 100}}})  # fmt: skip
    event = signed(event, evil)
    assert "rejected" in pdu_result(send_forged_transaction(hs1, ca, evil, [event]))["error"]
    levels = alice.get(f"rooms/{q(room_id)}/state/m.room.power_levels").body
    assert mallory.user_id not in levels.get("users", {})


def test_oversize_event_and_impostor_sender(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, evil = servers
    alice, mallory, room_id, state = shared_room(hs1, evil)
    big = signed(message_from(mallory.user_id or "", room_id, state, "x" * 70_000), evil)
    assert "invalid" in pdu_result(send_forged_transaction(hs1, ca, evil, [big]))["error"]
    # An event "from" alice (of hs1), signed by the evil server only.
    forged = message_from(mallory.user_id or "", room_id, state, "I am alice")
    forged["sender"] = alice.user_id
    forged = signed(forged, evil)
    assert "invalid" in pdu_result(send_forged_transaction(hs1, ca, evil, [forged]))["error"]
    assert "I am alice" not in bodies_in(alice, room_id)


def test_event_for_a_room_the_origin_is_not_in(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, evil = servers
    alice = new_user(hs1)
    room_id = create_room(alice, preset="private_chat")
    state = {(e["type"], e["state_key"]): e for e in alice.get(f"rooms/{q(room_id)}/state").body}
    outsider = f"@mallory{secrets.token_hex(3)}:{evil.server_name}"
    state[("m.room.member", outsider)] = state[("m.room.member", alice.user_id)]
    event = signed(message_from(outsider, room_id, state, "let me in"), evil)
    result = pdu_result(send_forged_transaction(hs1, ca, evil, [event]))
    assert "rejected" in result["error"]
    assert "let me in" not in bodies_in(alice, room_id)


def test_transaction_limits_and_replays(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, evil = servers
    too_many = send_forged_transaction(hs1, ca, evil, [{}] * 51)
    assert too_many.status_code == 400
    assert too_many.json()["errcode"] == "M_BAD_JSON"
    alice, mallory, room_id, state = shared_room(hs1, evil)
    event = signed(message_from(mallory.user_id or "", room_id, state, "only once"), evil)
    body = {"origin": evil.server_name, "origin_server_ts": 0, "pdus": [event], "edus": []}
    path = f"/_matrix/federation/v1/send/replayed{secrets.token_hex(3)}"
    for _ in range(2):
        resp = put_signed(hs1, ca, evil, path, body)
        assert resp.status_code == 200, resp.text
    assert bodies_in(alice, room_id).count("only once") == 1


def test_edus_speaking_for_other_servers_users_are_ignored(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, evil = servers
    alice, _, room_id, _ = shared_room(hs1, evil)
    bob = new_user(hs1)
    edus = [
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": alice.user_id,
                                             "typing": True}},
        {"edu_type": "m.direct_to_device", "content": {
            "sender": alice.user_id, "type": "m.room_key_request", "message_id": "x1",
            "messages": {bob.user_id: {"*": {"forged": True}}}}},
        {"edu_type": "m.device_list_update", "content": {"user_id": bob.user_id,
                                                          "device_id": "X", "stream_id": 1}},
        {"edu_type": "m.receipt", "content": "not an object"},
        {"edu_type": "m.presence", "content": {"push": {"not": "a list"}}},
    ]  # fmt: skip
    body = {"origin": evil.server_name, "origin_server_ts": 0, "pdus": [], "edus": edus}
    resp = put_signed(hs1, ca, evil, f"/_matrix/federation/v1/send/edus{secrets.token_hex(3)}",
                      body)  # fmt: skip
    assert resp.status_code == 200, resp.text
    sync = alice.get("sync", params={"timeout": "0"}).body
    typing = sync["rooms"]["join"][room_id].get("ephemeral", {}).get("events", [])
    assert not any(alice.user_id in e["content"].get("user_ids", []) for e in typing)
    bob_sync = bob.get("sync", params={"timeout": "0"}).body
    assert bob_sync.get("to_device", {}).get("events", []) == []
    assert_healthy(hs1)


def test_membership_requests_for_other_servers_users_and_unknown_versions(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, evil = servers
    alice = new_user(hs1)
    room_id = create_room(alice)
    victim = new_user(hs1)
    path = f"/_matrix/federation/v1/make_join/{q(room_id)}/{q(victim.user_id or '')}?ver=12"
    header = sign_request("GET", path, evil.server_name, hs1.server_name, None,
                          signing_key_of(evil))  # fmt: skip
    resp = requests.get(hs1._extra["federation_url"] + path, headers={"Authorization": header},
                        verify=ca.ca_path, timeout=10)  # fmt: skip
    assert resp.status_code == 403, resp.text
    invite_path = f"/_matrix/federation/v2/invite/{q(room_id)}/$whatever"
    invite = {"room_version": "999", "event": {}, "invite_room_state": []}
    resp = put_signed(hs1, ca, evil, invite_path, invite)
    assert resp.status_code == 400, resp.text
    assert resp.json()["errcode"] == "M_INCOMPATIBLE_ROOM_VERSION"


def test_malformed_membership_events_are_refused_not_crashed_on(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, evil = servers
    _alice, mallory, room_id, state = shared_room(hs1, evil)
    newcomer = f"@new{secrets.token_hex(3)}:{evil.server_name}"
    join = {
        "type": "m.room.member", "room_id": room_id, "sender": newcomer, "state_key": newcomer,
        "content": {"membership": "join"}, "depth": 50,
        "origin_server_ts": int(time.time() * 1000),
        "auth_events": [state[("m.room.power_levels", "")]["event_id"],
                        state[("m.room.join_rules", "")]["event_id"]],
    }  # fmt: skip
    # A content that is not an object, and signatures that are not an object.
    for bad in ({**join, "prev_events": [], "content": ["join"]},
                {**join, "prev_events": [], "signatures": "mine"}):  # fmt: skip
        path = f"/_matrix/federation/v2/send_join/{q(room_id)}/$x"
        resp = put_signed(hs1, ca, evil, path, bad)
        assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON", resp.text
    # Properly signed, but built on an event this server never saw.
    unknown = signed({**join, "prev_events": ["$never" + secrets.token_hex(8)]}, evil)
    path = f"/_matrix/federation/v2/send_join/{q(room_id)}/{q(compute_event_id(unknown, V12))}"
    resp = put_signed(hs1, ca, evil, path, unknown)
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON", resp.text
    # An invite whose (unsigned) unsigned section is a list: accepted, its state ignored.
    invitee = new_user(hs1)
    remote_room = f"!elsewhere{secrets.token_hex(4)}:{evil.server_name}"
    invite = signed({
        "type": "m.room.member", "room_id": remote_room, "sender": mallory.user_id,
        "state_key": invitee.user_id, "content": {"membership": "invite"}, "depth": 5,
        "origin_server_ts": int(time.time() * 1000), "prev_events": [], "auth_events": [],
    }, evil)  # fmt: skip
    invite_id = compute_event_id(invite, V12)
    resp = put_signed(hs1, ca, evil, f"/_matrix/federation/v2/invite/{q(remote_room)}/"
                      f"{q(invite_id)}", {"room_version": "12", "event": {**invite,
                      "unsigned": ["not", "an", "object"]}})  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert remote_room in invitee.get("sync", params={"timeout": "0"}).body["rooms"]["invite"]
    assert_healthy(hs1)


def test_outbound_requests_never_reach_blacklisted_addresses(
    db_kind: str, ca: FederationCA, servers: tuple[ServerProcess, ServerProcess]
) -> None:
    """With the default blacklist (loopback included), a server cannot be made to reach
    the test's loopback servers, whatever their names resolve to."""
    hs1, _ = servers
    guarded = make_federating_server(db_kind, ca, {"federation": {"ip_range_blacklist": [
        "127.0.0.0/8", "::1/128"]}})  # fmt: skip
    guarded.start()
    try:
        alice, carol = new_user(hs1), new_user(guarded)
        room_id = create_room(alice)
        resp = carol.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name})
        assert resp.status == 404, resp
        assert "blocked" in resp.body["error"]
        media = carol.get(f"/_matrix/client/v1/media/download/{q(hs1.server_name)}/abc")
        assert media.status == 502, media
        assert_healthy(guarded)
    finally:
        guarded.stop()


def test_server_still_serves_its_users_after_all_this(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    hs1, evil = servers
    alice, mallory, room_id, _ = shared_room(hs1, evil)
    alice.put(f"rooms/{q(room_id)}/send/m.room.message/healthy",
              {"msgtype": "m.text", "body": "still fine"})  # fmt: skip
    wait_until(lambda: "still fine" in bodies_in(mallory, room_id), what="a normal message")


def test_one_server_flooding_is_rate_limited(
    db_kind: str, ca: FederationCA, servers: tuple[ServerProcess, ServerProcess]
) -> None:
    _, evil = servers
    target = make_federating_server(db_kind, ca, {"rate_limiting": {
        "enabled": True, "federation": {"per_second": 0.5, "burst_count": 3}}})  # fmt: skip
    target.start()
    try:
        path = f"/_matrix/federation/v1/query/profile?user_id={q('@nobody:' + target.server_name)}"
        statuses = []
        for _ in range(6):
            header = sign_request("GET", path, evil.server_name, target.server_name, None,
                                  signing_key_of(evil))  # fmt: skip
            resp = requests.get(target._extra["federation_url"] + path, verify=ca.ca_path,
                                headers={"Authorization": header}, timeout=10)  # fmt: skip
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                assert resp.json()["errcode"] == "M_LIMIT_EXCEEDED"
                assert resp.json()["retry_after_ms"] > 0
        assert statuses[:3] == [404, 404, 404]
        assert 429 in statuses[3:]
        assert_healthy(target)
    finally:
        target.stop()


def test_fan_out_that_would_make_us_walk_far_is_refused(
    servers: tuple[ServerProcess, ServerProcess], ca: FederationCA
) -> None:
    hs1, evil = servers
    alice, mallory, room_id, state = shared_room(hs1, evil)
    fake_prevs = [f"$fake{i}{secrets.token_hex(8)}" for i in range(21)]
    wide = signed(message_from(mallory.user_id or "", room_id, state, "fan out",
                               prev_events=fake_prevs), evil)  # fmt: skip
    assert "invalid" in pdu_result(send_forged_transaction(hs1, ca, evil, [wide]))["error"]
    # Unknown prev events within the limit: fetched from the origin, at most a bounded
    # number, then the event is kept or refused; either way the answer comes promptly.
    narrow = signed(message_from(mallory.user_id or "", room_id, state, "gap",
                                 prev_events=fake_prevs[:3]), evil)  # fmt: skip
    started = time.monotonic()
    pdu_result(send_forged_transaction(hs1, ca, evil, [narrow]))
    assert time.monotonic() - started < 20
    assert "fan out" not in bodies_in(alice, room_id)
    assert_healthy(hs1)
