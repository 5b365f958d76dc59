"""The server's rules for key backup, as pure functions: which key to keep, and what a
backup may contain. The server never decrypts anything; it only checks shapes."""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Any

from unpaddedbase64 import decode_base64

MEGOLM_BACKUP_V1 = "m.megolm_backup.v1.curve25519-aes-sha2"
_ENCRYPTED_FIELDS = ("ciphertext", "ephemeral", "mac")
# Unpadded base64 in the standard alphabet (what the spec and every client sends).
_UNPADDED_BASE64 = re.compile(r"[A-Za-z0-9+/]+")
# The largest integer the database columns (BIGINT) hold.
_MAX_INT = 2**63 - 1

JsonDict = dict[str, Any]


class InvalidBackupData(ValueError):
    """The client sent something the server refuses to store (message says what)."""


@dataclass(frozen=True)
class KeyQuality:
    """What decides which of two backed-up copies of one session is better."""

    is_verified: bool
    first_message_index: int
    forwarded_count: int


def should_replace(stored: KeyQuality, candidate: KeyQuality) -> bool:
    """True if ``candidate`` is strictly better than ``stored``.

    Compared in order: verified beats unverified; then the lower first message index (it
    can decrypt more of the history); then the lower forwarded count (fewer hops). On a
    full tie the stored key is kept.
    """

    def rank(key: KeyQuality) -> tuple[int, int, int]:
        return (int(key.is_verified), -key.first_message_index, -key.forwarded_count)

    return rank(candidate) > rank(stored)


def _is_base64(value: Any, length: int | None = None) -> bool:
    """Unpadded base64 (of ``length`` bytes, if given). Base64 characters in any number but
    4n + 1 decode, so only a required length needs the decoding (a backup upload checks
    hundreds of ciphertexts)."""
    if not isinstance(value, str) or len(value) % 4 == 1 or not _UNPADDED_BASE64.fullmatch(value):
        return False
    if length is None:
        return True
    try:
        return len(decode_base64(value)) == length
    except (binascii.Error, ValueError):
        return False


def check_auth_data(algorithm: str, auth_data: Any) -> None:
    if not isinstance(auth_data, dict):
        raise InvalidBackupData("auth_data must be an object")
    if algorithm == MEGOLM_BACKUP_V1 and not _is_base64(auth_data.get("public_key"), 32):
        raise InvalidBackupData("auth_data.public_key must be an unpadded-base64 32-byte key")


def check_key_data(algorithm: str, data: Any) -> KeyQuality:
    """Validate one KeyBackupData; returns its quality for the replacement rule."""
    if not isinstance(data, dict):
        raise InvalidBackupData("key data must be an object")
    fmi, forwarded, verified = (
        data.get("first_message_index"), data.get("forwarded_count"), data.get("is_verified"),
    )  # fmt: skip
    for name, value in (("first_message_index", fmi), ("forwarded_count", forwarded)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT:
            raise InvalidBackupData(f"{name} must be a non-negative integer")
    if not isinstance(verified, bool):
        raise InvalidBackupData("is_verified must be a boolean")
    session_data = data.get("session_data")
    if not isinstance(session_data, dict):
        raise InvalidBackupData("session_data must be an object")
    if algorithm == MEGOLM_BACKUP_V1:
        # Exactly an encrypted blob: anything else could be a plaintext session key that a
        # buggy client is about to leak into the server's database.
        if set(session_data) != set(_ENCRYPTED_FIELDS):
            raise InvalidBackupData(
                "session_data must contain exactly ciphertext, ephemeral and mac "
                "(this server refuses anything that could be an unencrypted session key)"
            )
        if not _is_base64(session_data["ephemeral"], 32):
            raise InvalidBackupData("session_data.ephemeral must be a base64 32-byte key")
        for name in ("ciphertext", "mac"):
            if not _is_base64(session_data[name]):
                raise InvalidBackupData(f"session_data.{name} must be base64")
    return KeyQuality(verified, fmi, forwarded)  # type: ignore[arg-type]
