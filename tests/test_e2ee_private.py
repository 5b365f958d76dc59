"""The proof that the server's administrators cannot read end-to-end encrypted messages.

Two real Olm/Megolm clients (matrix-nio) talk in an encrypted room; one backs its Megolm
sessions up to the server, encrypted to a backup key held in secret storage, as Element
does. Then every row of every table of the database (and the raw database files and the
server log) is searched for the plaintexts and the keys: none may appear. Finally a new
device restores the history with only the recovery key, through the restore tool, and
decrypts every encrypted event the server hands out.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nio
import olm
from unpaddedbase64 import encode_base64

from keybackup.client_crypto import (
    backup_public_key,
    encode_recovery_key,
    encrypt_for_backup,
    import_sessions,
    ssss_encrypt,
)
from tests.harness import PASSWORD, PG_ARGS, Client, ServerProcess, new_user

JsonDict = dict[str, Any]
MEGOLM = "m.megolm.v1.aes-sha2"
BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
REPO_ROOT = Path(__file__).resolve().parent.parent


def q(value: str) -> str:
    return quote(value, safe="")


# The two olm clients


async def housekeeping(client: nio.AsyncClient) -> None:
    """What an E2EE client does after each sync: keys up, devices queried, sessions made."""
    if client.should_upload_keys:
        assert isinstance(await client.keys_upload(), nio.KeysUploadResponse)
    if client.should_query_keys:
        assert isinstance(await client.keys_query(), nio.KeysQueryResponse)
    if client.should_claim_keys:
        users = client.get_users_for_key_claiming()
        assert isinstance(await client.keys_claim(users), nio.KeysClaimResponse)
    await client.send_to_device_messages()


async def sync_once(client: nio.AsyncClient, timeout: int = 500) -> nio.SyncResponse:
    response = await client.sync(timeout=timeout)
    assert isinstance(response, nio.SyncResponse), response
    await housekeeping(client)
    return response


async def receive_bodies(
    client: nio.AsyncClient, room_id: str, wanted: set[str], deadline: float = 20.0
) -> set[str]:
    """Sync until every wanted body was decrypted; returns the decrypted bodies seen."""
    seen: set[str] = set()
    undecrypted: list[str] = []
    end = time.monotonic() + deadline
    while not wanted <= seen and time.monotonic() < end:
        response = await sync_once(client, timeout=1000)
        room = response.rooms.join.get(room_id)
        if room is None:
            continue
        for event in room.timeline.events:
            if isinstance(event, nio.RoomMessageText):
                assert event.decrypted, "a message arrived unencrypted"
                seen.add(event.body)
            elif isinstance(event, nio.MegolmEvent):
                undecrypted.append(event.session_id)
    assert wanted <= seen, f"decrypted {seen}, could not decrypt sessions {undecrypted}"
    return seen


async def logged_in(server: ServerProcess, store: str) -> tuple[Client, nio.AsyncClient]:
    http = new_user(server)
    assert http.user_id
    config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = nio.AsyncClient(server.base_url, http.user_id, store_path=store, config=config)
    login = await client.login(PASSWORD, device_name="olm test device")
    assert isinstance(login, nio.LoginResponse), login
    return http, client


# What an administrator can see


def database_rows(server: ServerProcess) -> Iterator[tuple[str, str]]:
    """(table, text of one row) for every row of every table."""
    if server.db_kind == "sqlite":
        conn = sqlite3.connect(server.sqlite_path)
        try:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            for table in tables:
                for row in conn.execute(f'SELECT * FROM "{table}"'):
                    yield table, row_text(row)
        finally:
            conn.close()
        return
    import psycopg2

    pg = psycopg2.connect(**{**PG_ARGS, "dbname": server.pg_database})
    try:
        cur = pg.cursor()
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        tables = [r[0] for r in cur.fetchall()]
        for table in tables:
            cur.execute(f'SELECT * FROM "{table}"')
            for row in cur.fetchall():
                yield table, row_text(row)
    finally:
        pg.close()


def row_text(row: tuple[Any, ...]) -> str:
    parts = []
    for value in row:
        if isinstance(value, memoryview):
            value = value.tobytes()
        if isinstance(value, bytes):
            parts.append(value.decode("latin-1"))
        elif isinstance(value, dict | list):
            parts.append(json.dumps(value))
        else:
            parts.append(str(value))
    text = "\x00".join(parts)
    # JSON may escape '/' (base64 has it); search the unescaped form too.
    return text + "\x00" + text.replace("\\/", "/")


def raw_files(server: ServerProcess) -> Iterator[tuple[str, bytes]]:
    """The database files themselves (free pages and the WAL included) and the log."""
    names = ["homeserver.log"]
    if server.db_kind == "sqlite":
        names += ["homeserver.db", "homeserver.db-wal", "homeserver.db-journal"]
    for name in names:
        path = Path(server.directory) / name
        if path.exists():
            yield name, path.read_bytes()


def base64_forms(secret: bytes) -> list[str]:
    unpadded = encode_base64(secret)
    return [
        unpadded,
        unpadded + "=" * (-len(unpadded) % 4),
        encode_base64(secret, urlsafe=True),
        secret.hex(),
    ]


# The test


async def test_administrator_cannot_read_but_recovery_key_restores(
    server: ServerProcess, tmp_path: Path
) -> None:
    tag = secrets.token_hex(6)
    canaries = {
        "alice": [f"PLAINTEXT-CANARY-{tag}-alice-{i}-{secrets.token_hex(4)}" for i in range(2)],
        "bob": [f"PLAINTEXT-CANARY-{tag}-bob-{i}-{secrets.token_hex(4)}" for i in range(2)],
    }
    all_canaries = canaries["alice"] + canaries["bob"]

    with tempfile.TemporaryDirectory() as store_a, tempfile.TemporaryDirectory() as store_b:
        alice_http, alice = await logged_in(server, store_a)
        _, bob = await logged_in(server, store_b)
        try:
            for client in (alice, bob):
                first = await client.sync(timeout=0, full_state=True)
                assert isinstance(first, nio.SyncResponse), first
                await housekeeping(client)
            created = await alice.room_create(
                invite=[bob.user_id],
                initial_state=[
                    {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
                ],
            )
            assert isinstance(created, nio.RoomCreateResponse), created
            room_id = created.room_id
            await sync_once(bob)
            assert isinstance(await bob.join(room_id), nio.JoinResponse)
            for _ in range(3):
                await sync_once(alice)
                await sync_once(bob)
            assert alice.rooms[room_id].encrypted and bob.rooms[room_id].encrypted

            # Each sends two messages; each decrypts the other's.
            for body in canaries["alice"]:
                sent = await alice.room_send(
                    room_id,
                    "m.room.message",
                    {"msgtype": "m.text", "body": body},
                    ignore_unverified_devices=True,
                )
                assert isinstance(sent, nio.RoomSendResponse), sent
            await receive_bodies(bob, room_id, set(canaries["alice"]))
            await sync_once(alice)
            for body in canaries["bob"]:
                sent = await bob.room_send(
                    room_id,
                    "m.room.message",
                    {"msgtype": "m.text", "body": body},
                    ignore_unverified_devices=True,
                )
                assert isinstance(sent, nio.RoomSendResponse), sent
            await receive_bodies(alice, room_id, set(canaries["bob"]))

            # Alice's Megolm sessions for the room: her own and bob's.
            assert alice.olm is not None
            sessions = [s for s in alice.olm.inbound_group_store if s.room_id == room_id]
        finally:
            await alice.close()
            await bob.close()

    assert len({s.sender_key for s in sessions}) == 2, "expected alice's and bob's sessions"
    exported: dict[str, JsonDict] = {}
    for session in sessions:
        exported[session.id] = {
            "algorithm": MEGOLM,
            "sender_key": session.sender_key,
            "session_key": session.export_session(session.first_known_index),
            "sender_claimed_keys": {"ed25519": session.ed25519},
            "forwarding_curve25519_key_chain": [],
        }

    # Key backup, encrypted to a key the server never sees, held in secret storage.
    backup_key = os.urandom(32)
    public_key = backup_public_key(backup_key)
    created_version = alice_http.post(
        "room_keys/version",
        {"algorithm": BACKUP_ALGORITHM, "auth_data": {"public_key": public_key}},
    )
    assert created_version.status == 200, created_version
    version = created_version.body["version"]
    upload = {
        "rooms": {
            room_id: {
                "sessions": {
                    session.id: {
                        "first_message_index": session.first_known_index,
                        "forwarded_count": 0,
                        "is_verified": False,
                        "session_data": encrypt_for_backup(public_key, exported[session.id]),
                    }
                    for session in sessions
                }
            }
        }
    }
    resp = alice_http.put("room_keys/keys", upload, params={"version": version})
    assert resp.status == 200, resp
    assert resp.body["count"] == len(sessions)

    ssss_key = os.urandom(32)
    ssss_key_id = "key" + secrets.token_hex(8)
    check = ssss_encrypt(ssss_key, "", b"\x00" * 32)
    user_path = f"user/{q(alice_http.user_id or '')}/account_data"
    account_data = {
        f"m.secret_storage.key.{ssss_key_id}": {
            "algorithm": "m.secret_storage.v1.aes-hmac-sha2",
            "iv": check["iv"],
            "mac": check["mac"],
        },
        "m.secret_storage.default_key": {"key": ssss_key_id},
        "m.megolm_backup.v1": {
            "encrypted": {
                ssss_key_id: ssss_encrypt(
                    ssss_key, "m.megolm_backup.v1", encode_base64(backup_key).encode()
                )
            }
        },
    }
    for data_type, content in account_data.items():
        resp = alice_http.put(f"{user_path}/{q(data_type)}", content)
        assert resp.status == 200, resp

    # The administrator's view: every row of every table.
    secrets_to_hide: dict[str, str] = {c: "message plaintext" for c in all_canaries}
    for session_id, data in exported.items():
        secrets_to_hide[data["session_key"]] = f"Megolm session key {session_id}"
    for form in base64_forms(backup_key):
        secrets_to_hide[form] = "backup private key"
    for form in base64_forms(ssss_key):
        secrets_to_hide[form] = "secret-storage key"
    recovery_key = encode_recovery_key(ssss_key)
    secrets_to_hide[recovery_key] = "recovery key"
    secrets_to_hide[recovery_key.replace(" ", "")] = "recovery key"
    secrets_to_hide["PLAINTEXT-CANARY-" + tag] = "message plaintext (prefix)"

    # What must be there instead: the encrypted events and the encrypted backup.
    stored = alice_http.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "100"})
    assert stored.status == 200, stored
    public_markers = {
        e["content"]["ciphertext"] for e in stored.body["chunk"] if e["type"] == "m.room.encrypted"
    }
    assert len(public_markers) == len(all_canaries), stored.body["chunk"]
    public_markers |= {public_key} | {
        data["session_data"]["ciphertext"] for data in upload["rooms"][room_id]["sessions"].values()
    }

    tables: set[str] = set()
    public_seen: set[str] = set()
    leaks = []
    for table, text in database_rows(server):
        tables.add(table)
        for secret, what in secrets_to_hide.items():
            if secret in text:
                leaks.append(f"{what} in table {table}: {text[:300]!r}")
        public_seen |= {m for m in public_markers if m in text}
    assert not leaks, "\n".join(leaks)
    # Not vacuous: the ciphertexts of the events and of the backup were found where the
    # plaintexts were not.
    assert {"device_keys", "backup_keys", "account_data"} <= tables, tables
    assert public_seen == public_markers, public_markers - public_seen

    for name, blob in raw_files(server):
        for secret, what in secrets_to_hide.items():
            assert secret.encode() not in blob, f"{what} in {name}"

    # A new device restores the history with the recovery key alone.
    out = tmp_path / "keys.txt"
    base_cmd = [
        sys.executable,
        "-m",
        "scripts.restore_keys",
        "--url",
        server.base_url,
        "--user",
        alice_http.user_id or "",
        "--password",
        PASSWORD,
        "--out",
        str(out),
        "--export-passphrase",
        "pw",
    ]
    wrong = subprocess.run(
        [*base_cmd, "--recovery-key", encode_recovery_key(os.urandom(32))],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert wrong.returncode == 2, (wrong.stdout, wrong.stderr)
    assert not out.exists()
    done = subprocess.run(
        [*base_cmd, "--recovery-key", recovery_key],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    restored = {s["session_id"]: s for s in import_sessions(out.read_text(), "pw")}
    assert set(restored) == set(exported)
    for session_id, session in restored.items():
        assert session["room_id"] == room_id
        assert session["session_key"] == exported[session_id]["session_key"]
        assert session["sender_key"] == exported[session_id]["sender_key"]

    fresh = Client(server)
    assert fresh.login(alice_http.user_id or "").status == 200
    history = fresh.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "100"})
    assert history.status == 200, history
    encrypted = [e for e in history.body["chunk"] if e["type"] == "m.room.encrypted"]
    assert len(encrypted) == len(all_canaries), history.body["chunk"]
    plaintexts = []
    for event in encrypted:
        content = event["content"]
        assert content["algorithm"] == MEGOLM
        assert "body" not in content
        session = olm.InboundGroupSession.import_session(
            restored[content["session_id"]]["session_key"]
        )
        plaintext, _index = session.decrypt(content["ciphertext"])
        decrypted = json.loads(plaintext)
        assert decrypted["room_id"] == room_id
        assert decrypted["type"] == "m.room.message"
        plaintexts.append(decrypted["content"]["body"])
    assert sorted(plaintexts) == sorted(all_canaries)
