"""Restore a key backup with only the recovery key (or passphrase): log in, check the key
against secret storage and the backup's public key, download, decrypt, and write a Megolm
key-export file any client can import. Everything is decrypted here, on the user's machine.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from unpaddedbase64 import decode_base64

from keybackup.client_crypto import (
    RecoveryKeyError,
    backup_public_key,
    decode_recovery_key,
    decrypt_from_backup,
    key_from_passphrase,
    ssss_decrypt,
    ssss_key_matches,
)
from keybackup.rules import MEGOLM_BACKUP_V1

JsonDict = dict[str, Any]


class RestoreError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class RestoreResult:
    version: str
    sessions: list[JsonDict] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)


class HomeserverClient:
    """Just enough of the client-server API, over the standard library."""

    def __init__(self, base_url: str, access_token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token

    def call(self, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
        headers = {"Content-Type": "application/json"}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        request = urllib.request.Request(
            self.base_url + "/_matrix/client/v3" + path,
            data=json.dumps(body).encode() if body is not None else None,
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                result: JsonDict = json.load(response)
                return result
        except urllib.error.HTTPError as e:
            try:
                error = json.load(e)
            except ValueError:
                error = {}
            raise RestoreError(
                f"{method} {path}: {e.code} {error.get('errcode', '')} {error.get('error', '')}",
                e.code,
            ) from None
        except urllib.error.URLError as e:
            raise RestoreError(f"cannot reach {self.base_url}: {e.reason}") from None

    def login(self, user: str, password: str) -> None:
        result = self.call(
            "POST",
            "/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": password,
                "initial_device_display_name": "key backup restore",
            },
        )
        self.access_token = result["access_token"]
        self.user_id = result["user_id"]

    def account_data(self, user_id: str, data_type: str) -> JsonDict | None:
        path = f"/user/{urllib.parse.quote(user_id)}/account_data/{urllib.parse.quote(data_type)}"
        try:
            return self.call("GET", path)
        except RestoreError as e:
            if e.status == 404:
                return None
            raise


def backup_key_from_secret_storage(
    client: HomeserverClient, user_id: str, recovery_key: str | None, passphrase: str | None
) -> bytes | None:
    """The backup key held in secret storage, opened with the secret-storage key."""
    default = client.account_data(user_id, "m.secret_storage.default_key")
    if not default or not isinstance(default.get("key"), str):
        return None
    key_id = default["key"]
    description = client.account_data(user_id, f"m.secret_storage.key.{key_id}") or {}
    if recovery_key is not None:
        key = decode_recovery_key(recovery_key)
    else:
        assert passphrase is not None
        params = description.get("passphrase") or {}
        if params.get("algorithm") != "m.pbkdf2":
            raise RecoveryKeyError("this secret storage key has no passphrase; use the key")
        key = key_from_passphrase(
            passphrase, params["salt"], int(params["iterations"]), int(params.get("bits", 256))
        )
    if not ssss_key_matches(key, description):
        raise RecoveryKeyError("the key does not match this account's secret storage key")
    stored = client.account_data(user_id, "m.megolm_backup.v1")
    encrypted = ((stored or {}).get("encrypted") or {}).get(key_id)
    if not encrypted:
        raise RecoveryKeyError("secret storage holds no backup key")
    secret = ssss_decrypt(key, "m.megolm_backup.v1", encrypted)
    return decode_base64(secret.decode("ascii").strip())


def restore(
    client: HomeserverClient,
    user_id: str,
    recovery_key: str | None = None,
    passphrase: str | None = None,
) -> RestoreResult:
    version = client.call("GET", "/room_keys/version")
    if version.get("algorithm") != MEGOLM_BACKUP_V1:
        raise RestoreError(f"unsupported backup algorithm {version.get('algorithm')!r}")
    public_key = version["auth_data"]["public_key"]

    private_key: bytes | None = None
    if recovery_key is not None:
        candidate = decode_recovery_key(recovery_key)
        if backup_public_key(candidate) == public_key:
            private_key = candidate  # a bare backup decryption key
    if private_key is None:
        private_key = backup_key_from_secret_storage(client, user_id, recovery_key, passphrase)
    if private_key is None and passphrase is not None:
        auth = version["auth_data"]
        if "private_key_salt" in auth:  # a backup made directly from a passphrase
            private_key = key_from_passphrase(
                passphrase, auth["private_key_salt"], int(auth["private_key_iterations"])
            )
    # Refuse a wrong key before anything is downloaded.
    if private_key is None or backup_public_key(private_key) != public_key:
        raise RecoveryKeyError("the key does not match the backup's public key")

    result = RestoreResult(str(version["version"]))
    keys = client.call("GET", f"/room_keys/keys?version={urllib.parse.quote(result.version)}")
    for room_id, room in keys.get("rooms", {}).items():
        for session_id, data in room.get("sessions", {}).items():
            try:
                session = decrypt_from_backup(private_key, data["session_data"])
            except (ValueError, KeyError) as e:
                result.failed.append((room_id, session_id, str(e)))
                continue
            result.sessions.append({
                "algorithm": session.get("algorithm", "m.megolm.v1.aes-sha2"),
                "room_id": room_id, "session_id": session_id,
                "session_key": session.get("session_key"),
                "sender_key": session.get("sender_key"),
                "sender_claimed_keys": session.get("sender_claimed_keys", {}),
                "forwarding_curve25519_key_chain":
                    session.get("forwarding_curve25519_key_chain", []),
            })  # fmt: skip
    return result
