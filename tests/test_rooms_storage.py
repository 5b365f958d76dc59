"""Stored events are the exact signed bytes: canonical, hashed, signed, and unchanged by
redaction; rooms survive a restart."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from canonicaljson import encode_canonical_json
from signedjson.key import encode_verify_key_base64, get_verify_key

from crypto.signing_keys import read_signing_key
from rooms.events import check_content_hash, compute_event_id, verify_event_signature
from rooms.versions import get_room_version
from tests.harness import PG_ARGS, Client, ServerProcess, new_user


def q(value: str) -> str:
    return quote(value, safe="")


def stored_rows(server: ServerProcess, room_id: str) -> dict[str, str]:
    """event_id -> the `json` column, read straight from the database."""
    sql = "SELECT event_id, json FROM events WHERE room_id = {} ORDER BY stream_ordering"
    if server.db_kind == "sqlite":
        conn = sqlite3.connect(server.sqlite_path)
        try:
            rows = conn.execute(sql.format("?"), (room_id,)).fetchall()
        finally:
            conn.close()
    else:
        import psycopg2

        pg = psycopg2.connect(**{**PG_ARGS, "dbname": server.pg_database})
        try:
            with pg.cursor() as cur:
                cur.execute(sql.format("%s"), (room_id,))
                rows = cur.fetchall()
        finally:
            pg.close()
    return {str(r[0]): str(r[1]) for r in rows}


def server_key(server: ServerProcess) -> tuple[str, str]:
    """(key ID, unpadded base64 public key) of the server's signing key."""
    key = read_signing_key(os.path.join(server.directory, "signing.key"))
    return "ed25519:" + key.version, encode_verify_key_base64(get_verify_key(key))


def check_stored(
    server: ServerProcess, version_id: str, event_id: str, text: str
) -> dict[str, Any]:
    version = get_room_version(version_id)
    assert version is not None
    event = json.loads(text)
    # (a) canonical JSON, byte for byte
    assert text.encode("utf-8") == encode_canonical_json(event), text
    # (b) the content hash
    assert check_content_hash(event), event
    # (c) our signature, with our published key
    key_id, public = server_key(server)
    assert set(event["signatures"]) == {server.server_name}
    assert key_id in event["signatures"][server.server_name]
    assert verify_event_signature(event, version, server.server_name, key_id, public), event
    # A tampered copy does not verify.
    tampered = json.loads(text)
    tampered["origin_server_ts"] = int(tampered["origin_server_ts"]) + 1
    assert not verify_event_signature(tampered, version, server.server_name, key_id, public)
    # The event ID is the one derived from (or, in v1/v2, carried by) the stored event.
    assert compute_event_id(event, version) == event_id
    if version.event_id_format != 1:
        assert "event_id" not in event
    return event


def create_room(client: Client, version: str) -> str:
    resp = client.post("createRoom", {"room_version": version, "name": "stored", "topic": "t"})
    assert resp.status == 200, resp
    return str(resp.body["room_id"])


def send(client: Client, room_id: str, body: str, txn_id: str) -> str:
    resp = client.put(
        f"rooms/{q(room_id)}/send/m.room.message/{q(txn_id)}",
        {"msgtype": "m.text", "body": body, "extra": {"n": 1, "s": "é ☃ \u2028"}},
    )
    assert resp.status == 200, resp
    return str(resp.body["event_id"])


@pytest.mark.parametrize("version", ["1", "3", "6", "11", "12"])
def test_stored_events_are_signed_canonical_json(
    server: ServerProcess, alice: Client, version: str
) -> None:
    room_id = create_room(alice, version)
    message_id = send(alice, room_id, "stored message", "s1")
    rows = stored_rows(server, room_id)
    assert message_id in rows
    assert len(rows) >= 7  # create, member, power levels, join rules, ..., name, topic, message
    events = {eid: check_stored(server, version, eid, text) for eid, text in rows.items()}

    create = next(e for e in events.values() if e["type"] == "m.room.create")
    assert create["content"]["room_version"] == version
    if version == "12":
        assert "room_id" not in create
    for event in events.values():
        if event is not create or version != "12":
            assert event["room_id"] == room_id

    # (d) what clients get is the stored event
    for event_id, stored in events.items():
        resp = alice.get(f"rooms/{q(room_id)}/event/{q(event_id)}")
        assert resp.status == 200, resp
        served = resp.body
        assert served["event_id"] == event_id
        for key in ("content", "type", "sender", "origin_server_ts"):
            assert served[key] == stored[key], (key, served, stored)
        if "state_key" in stored:
            assert served["state_key"] == stored["state_key"]
        for key in ("signatures", "hashes", "auth_events", "prev_events", "depth"):
            assert key not in served
    assert events[message_id]["content"]["extra"] == {"n": 1, "s": "é ☃ \u2028"}


@pytest.mark.parametrize("version", ["1", "11", "12"])
def test_redaction_leaves_stored_json_unchanged(
    server: ServerProcess, alice: Client, version: str
) -> None:
    room_id = create_room(alice, version)
    message_id = send(alice, room_id, "to be redacted", "r1")
    before = stored_rows(server, room_id)[message_id]
    resp = alice.put(f"rooms/{q(room_id)}/redact/{q(message_id)}/red1", {"reason": "gone"})
    assert resp.status == 200, resp
    redaction_id = resp.body["event_id"]

    rows = stored_rows(server, room_id)
    assert rows[message_id] == before
    check_stored(server, version, message_id, rows[message_id])
    redaction = check_stored(server, version, redaction_id, rows[redaction_id])
    assert redaction["type"] == "m.room.redaction"
    if version == "11" or version == "12":
        assert redaction["content"]["redacts"] == message_id
    else:
        assert redaction["redacts"] == message_id
    assert json.loads(before)["content"]["body"] == "to be redacted"

    # Served redacted.
    served = alice.get(f"rooms/{q(room_id)}/event/{q(message_id)}").body
    assert served["content"] == {}
    assert served["unsigned"]["redacted_because"]["event_id"] == redaction_id
    chunk = alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "5"}).body[
        "chunk"
    ]
    assert {e["event_id"]: e for e in chunk}[message_id]["content"] == {}


def test_room_survives_restart(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    alice = new_user(server)
    bob = new_user(server)
    resp = alice.post("createRoom", {"preset": "public_chat", "name": "durable"})
    assert resp.status == 200, resp
    room_id = resp.body["room_id"]
    assert bob.post(f"join/{q(room_id)}", {}).status == 200
    sent = [send(alice, room_id, f"before {i}", f"t{i}") for i in range(3)]
    redacted = send(bob, room_id, "redact me", "bob1")
    assert alice.put(f"rooms/{q(room_id)}/redact/{q(redacted)}/x1", {}).status == 200
    rows_before = stored_rows(server, room_id)

    server.restart()

    # Sessions, history, state and redactions survive.
    resp = alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "f", "limit": "100"})
    assert resp.status == 200, resp
    messages = [e for e in resp.body["chunk"] if e["type"] == "m.room.message"]
    assert [e["event_id"] for e in messages] == [*sent, redacted]
    assert [e["content"].get("body") for e in messages] == [
        "before 0",
        "before 1",
        "before 2",
        None,
    ]
    assert alice.get(f"rooms/{q(room_id)}/state/m.room.name").body == {"name": "durable"}
    assert room_id in bob.get("joined_rooms").body["joined_rooms"]
    # A retried transaction from before the restart is still recognised.
    assert send(alice, room_id, "before 0", "t0") == sent[0]

    # New events extend the same room.
    after = send(alice, room_id, "after", "t-after")
    resp = alice.put(f"rooms/{q(room_id)}/state/m.room.topic", {"topic": "new"})
    assert resp.status == 200, resp
    assert bob.get(f"rooms/{q(room_id)}/state/m.room.topic").body == {"topic": "new"}
    resp = bob.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "3"})
    assert [e["event_id"] for e in resp.body["chunk"]][1] == after
    assert resp.body["chunk"][2]["type"] == "m.room.redaction"

    rows_after = stored_rows(server, room_id)
    for event_id, text in rows_before.items():
        assert rows_after[event_id] == text
    version = alice.get(f"rooms/{q(room_id)}/state/m.room.create").body["room_version"]
    for event_id, text in rows_after.items():
        check_stored(server, version, event_id, text)
    # A new user can still join after the restart.
    carol = new_user(server)
    assert carol.post(f"join/{q(room_id)}", {}).status == 200
    resp = carol.get(f"rooms/{q(room_id)}/event/{q(after)}")
    assert resp.status == 200 and resp.body["content"]["body"] == "after"
