"""Restoring a key backup end to end, as a user who set up secret storage in Element would:
real Megolm sessions (libolm) backed up encrypted, then ``scripts/restore_keys.py`` run as
a command with only the recovery key (or passphrase) writes a key-export file whose
session keys decrypt the original messages. A wrong key downloads nothing. The database
never holds a plaintext session key."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import olm
import pytest

from keybackup.client_crypto import (
    RecoveryKeyError,
    backup_public_key,
    decode_recovery_key,
    encode_recovery_key,
    encrypt_for_backup,
    import_sessions,
    key_from_passphrase,
    ssss_encrypt,
)
from tests.harness import PASSWORD, Client, ServerProcess, new_user
from tests.test_key_backup import ALGORITHM, database_rows

REPO = Path(__file__).resolve().parents[1]
EXPORT_PASSPHRASE = "export file passphrase"
SESSION_COUNT = 20

JsonDict = dict[str, Any]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


@dataclass
class BackedUpSession:
    room_id: str
    session_id: str
    exported: JsonDict  # what the export file should hold for it
    message: str  # a Megolm message encrypted by the original outbound session
    plaintext: str
    message_index: int


@dataclass
class Owner:
    """A user with secret storage, a backup and real sessions in it."""

    client: Client
    ssss_key: bytes
    backup_key: bytes
    version: str
    sessions: list[BackedUpSession] = field(default_factory=list)

    @property
    def user_id(self) -> str:
        assert self.client.user_id is not None
        return self.client.user_id


def put_account_data(user: Client, data_type: str, content: JsonDict) -> None:
    assert user.user_id is not None
    path = f"user/{quote(user.user_id, safe='')}/account_data/{quote(data_type, safe='')}"
    resp = user.put(path, content)
    assert resp.status == 200, resp


def set_up_secret_storage(
    user: Client,
    ssss_key: bytes,
    backup_key: bytes,
    passphrase_info: JsonDict | None = None,
    padded_secret: bool = False,
) -> None:
    """What Element does: the key's description with its check (iv, mac of 32 zero bytes),
    the default key, and the backup key (base64) encrypted under the name
    ``m.megolm_backup.v1``."""
    key_id = secrets.token_urlsafe(12)
    check = ssss_encrypt(ssss_key, "", b"\0" * 32)
    description: JsonDict = {
        "algorithm": "m.secret_storage.v1.aes-hmac-sha2",
        "name": "m.default",
        "iv": check["iv"],
        "mac": check["mac"],
    }
    if passphrase_info is not None:
        description["passphrase"] = passphrase_info
    put_account_data(user, f"m.secret_storage.key.{key_id}", description)
    put_account_data(user, "m.secret_storage.default_key", {"key": key_id})
    secret = base64.b64encode(backup_key).decode()
    if not padded_secret:
        secret = secret.rstrip("=")
    encrypted = ssss_encrypt(ssss_key, "m.megolm_backup.v1", secret.encode())
    put_account_data(user, "m.megolm_backup.v1", {"encrypted": {key_id: encrypted}})


def back_up_sessions(user: Client, version: str, public_key: str) -> list[BackedUpSession]:
    """Real Megolm sessions, some starting past index 0, uploaded in two batches."""
    sender_key, signing_key = b64(os.urandom(32)), b64(os.urandom(32))
    sessions: list[BackedUpSession] = []
    for i in range(SESSION_COUNT):
        outbound = olm.OutboundGroupSession()
        for _ in range(i % 3):  # messages sent before this device got the key
            outbound.encrypt("earlier")
        inbound = olm.InboundGroupSession(outbound.session_key)
        first_index = inbound.first_known_index
        assert first_index == i % 3
        plaintext = f"secret message {i} {secrets.token_hex(4)}"
        message = outbound.encrypt(plaintext)
        exported = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": f"!room{i % 3}:example.org",
            "session_id": outbound.id,
            "session_key": inbound.export_session(first_index),
            "sender_key": sender_key,
            "sender_claimed_keys": {"ed25519": signing_key},
            "forwarding_curve25519_key_chain": [],
        }
        sessions.append(
            BackedUpSession(exported["room_id"], outbound.id, exported, message, plaintext, i % 3)
        )

    for batch in (sessions[:12], sessions[12:]):
        rooms: JsonDict = {}
        for s in batch:
            backed_up = {k: v for k, v in s.exported.items() if k not in ("room_id", "session_id")}
            rooms.setdefault(s.room_id, {"sessions": {}})["sessions"][s.session_id] = {
                "first_message_index": s.message_index,
                "forwarded_count": 0,
                "is_verified": True,
                "session_data": encrypt_for_backup(public_key, backed_up),
            }
        resp = user.put("room_keys/keys", {"rooms": rooms}, params={"version": version})
        assert resp.status == 200, resp
    resp = user.get("room_keys/version")
    assert resp.status == 200 and resp.body["count"] == SESSION_COUNT, resp
    return sessions


def make_owner(
    server: ServerProcess, passphrase_info: JsonDict | None = None, ssss_key: bytes | None = None
) -> Owner:
    user = new_user(server)
    ssss_key = ssss_key or os.urandom(32)
    backup_key = os.urandom(32)
    set_up_secret_storage(
        user, ssss_key, backup_key, passphrase_info, padded_secret=passphrase_info is not None
    )
    public_key = backup_public_key(backup_key)
    resp = user.post(
        "room_keys/version", {"algorithm": ALGORITHM, "auth_data": {"public_key": public_key}}
    )
    assert resp.status == 200, resp
    version = resp.body["version"]
    sessions = back_up_sessions(user, version, public_key)
    return Owner(user, ssss_key, backup_key, version, sessions)


@pytest.fixture
def owner(server: ServerProcess) -> Owner:
    return make_owner(server)


def run_restore(
    server: ServerProcess, user_id: str, out: Path, *key_args: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "scripts.restore_keys", "--url", server.base_url]
    command += ["--user", user_id, "--password", PASSWORD, "--out", str(out)]
    command += ["--export-passphrase", EXPORT_PASSPHRASE, *key_args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def assert_restored(
    owner: Owner, out: Path, result: subprocess.CompletedProcess[str], returncode: int = 0
) -> None:
    assert result.returncode == returncode, result
    assert f"Restored {SESSION_COUNT} sessions from backup version {owner.version}" in (
        result.stdout
    )
    assert out.stat().st_mode & 0o077 == 0  # only the user can read the keys
    restored = import_sessions(out.read_text(encoding="utf-8"), EXPORT_PASSPHRASE)
    assert len(restored) == SESSION_COUNT
    by_id = {(s["room_id"], s["session_id"]): s for s in restored}
    assert set(by_id) == {(s.room_id, s.session_id) for s in owner.sessions}
    for original in owner.sessions:
        session = by_id[original.room_id, original.session_id]
        assert session == original.exported
        # The restored key opens what the original outbound session encrypted.
        inbound = olm.InboundGroupSession.import_session(session["session_key"])
        assert inbound.id == original.session_id
        assert inbound.first_known_index == original.message_index
        assert inbound.decrypt(original.message) == (original.plaintext, original.message_index)


def keys_downloads(server: ServerProcess, user_id: str) -> list[str]:
    """Access-log lines of ``user_id`` downloading keys, once the log has caught up."""
    sentinel = "sentinel" + secrets.token_hex(6)
    Client(server).get("/_matrix/client/versions", params={"s": sentinel}, token=False)
    deadline = time.monotonic() + 10
    while sentinel not in server.log_text():
        assert time.monotonic() < deadline, "the access log never showed the sentinel request"
        time.sleep(0.05)
    return [
        line
        for line in server.log_text().splitlines()
        if f" {user_id} GET " in line and "/room_keys/keys" in line
    ]


def test_restore_with_the_recovery_key(owner: Owner, tmp_path: Path) -> None:
    out = tmp_path / "element-keys.txt"
    result = run_restore(
        owner.client.server,
        owner.user_id,
        out,
        "--recovery-key",
        encode_recovery_key(owner.ssss_key),
    )
    assert_restored(owner, out, result)
    # The check below (nothing downloaded with a wrong key) can see downloads.
    assert keys_downloads(owner.client.server, owner.user_id)


def test_restore_with_the_backup_key_itself(owner: Owner, tmp_path: Path) -> None:
    """A bare backup decryption key works too; and the user gives just a localpart."""
    out = tmp_path / "keys.txt"
    localpart = owner.user_id[1:].split(":")[0]
    result = run_restore(
        owner.client.server,
        localpart,
        out,
        "--recovery-key",
        encode_recovery_key(owner.backup_key).replace(" ", ""),
    )
    assert_restored(owner, out, result)


def test_a_session_that_does_not_decrypt_is_reported(owner: Owner, tmp_path: Path) -> None:
    """A session encrypted to some other key is named on stderr, the rest are restored."""
    stray = encrypt_for_backup(backup_public_key(os.urandom(32)), {"session_key": "x"})
    data = {"first_message_index": 0, "forwarded_count": 0, "is_verified": True}
    resp = owner.client.put(
        "room_keys/keys/!stray:example.org/straysession",
        {**data, "session_data": stray},
        params={"version": owner.version},
    )
    assert resp.status == 200, resp
    out = tmp_path / "keys.txt"
    result = run_restore(
        owner.client.server,
        owner.user_id,
        out,
        "--recovery-key",
        encode_recovery_key(owner.ssss_key),
    )
    assert "straysession" in result.stderr, result
    # Partial success has its own exit code (not success, nor a wrong key or failure).
    assert result.returncode not in (0, 1, 2), result
    assert_restored(owner, out, result, returncode=result.returncode)


@pytest.mark.parametrize(
    "wrong_key",
    ["another-key", "typo", "not-a-key"],
)
def test_wrong_recovery_key_downloads_nothing(owner: Owner, tmp_path: Path, wrong_key: str) -> None:
    real = encode_recovery_key(owner.ssss_key)
    if wrong_key == "another-key":
        key = encode_recovery_key(os.urandom(32))
    elif wrong_key == "typo":
        # One character of the real key changed, to one its parity byte catches (a one-byte
        # XOR misses about 1 in 256 single-character changes: that is the format, not us).
        position = 7
        for replacement in "23456789ABCDEFGH":
            key = real[:position] + replacement + real[position + 1 :]
            if key == real:
                continue
            try:
                decode_recovery_key(key)
            except RecoveryKeyError as e:
                if "typo" in str(e):
                    break
    else:
        key = "this is not a recovery key"
    out = tmp_path / "keys.txt"
    result = run_restore(owner.client.server, owner.user_id, out, "--recovery-key", key)
    assert result.returncode != 0, result
    assert result.stderr.strip(), result
    assert "Traceback" not in result.stderr, result.stderr
    assert "key" in result.stderr.lower(), result.stderr
    if wrong_key == "typo":
        assert "typo" in result.stderr, result.stderr
    assert not out.exists()
    assert keys_downloads(owner.client.server, owner.user_id) == []


def test_restore_with_the_passphrase(server: ServerProcess, tmp_path: Path) -> None:
    passphrase = "my secret phrase with spaces"
    salt, iterations = secrets.token_urlsafe(24), 20_000
    info = {"algorithm": "m.pbkdf2", "salt": salt, "iterations": iterations, "bits": 256}
    owner = make_owner(server, info, key_from_passphrase(passphrase, salt, iterations))

    wrong_out = tmp_path / "wrong.txt"
    result = run_restore(server, owner.user_id, wrong_out, "--passphrase", passphrase + "!")
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert not wrong_out.exists()
    assert keys_downloads(server, owner.user_id) == []

    out = tmp_path / "keys.txt"
    result = run_restore(server, owner.user_id, out, "--passphrase", passphrase)
    assert_restored(owner, out, result)


def test_the_database_holds_no_plaintext_session_key(owner: Owner) -> None:
    server = owner.client.server
    tables = database_rows(server)
    assert len([r for r in tables["backup_keys"] if owner.user_id in r]) == SESSION_COUNT

    def text_of(value: Any) -> str:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value).decode("latin-1")
        return str(value)

    dump = "\n".join(
        "\t".join(text_of(value) for value in row) for rows in tables.values() for row in rows
    )
    # The dump is the real thing: the backup's public key and session IDs are in it.
    assert backup_public_key(owner.backup_key) in dump
    assert all(s.session_id in dump for s in owner.sessions)
    secrets_in_plain = [s.exported["session_key"] for s in owner.sessions]
    # Also look for a shorter prefix, in case of truncation or re-encoding.
    secrets_in_plain += [key[:40] for key in secrets_in_plain]
    secrets_in_plain += [b64(owner.backup_key), b64(owner.ssss_key)]
    for secret in secrets_in_plain:
        assert secret not in dump
        assert secret not in server.log_text()
