"""The server's key-backup rules as pure functions: which copy of a session key is kept,
and the shapes it accepts for ``m.megolm_backup.v1.curve25519-aes-sha2``."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from keybackup.client_crypto import backup_public_key, encrypt_for_backup
from keybackup.rules import (
    MEGOLM_BACKUP_V1,
    InvalidBackupData,
    KeyQuality,
    check_auth_data,
    check_key_data,
    should_replace,
)

PUBLIC_KEY = backup_public_key(os.urandom(32))


def q(verified: bool, fmi: int, forwarded: int) -> KeyQuality:
    return KeyQuality(is_verified=verified, first_message_index=fmi, forwarded_count=forwarded)


# (stored, candidate, candidate replaces stored)
REPLACEMENT_CASES = [
    # Verified beats unverified, whatever the index and forwarded count.
    (q(False, 0, 0), q(True, 9, 9), True),
    (q(True, 9, 9), q(False, 0, 0), False),
    # Same verification: the lower first message index wins, whatever the forwarded count.
    (q(False, 5, 0), q(False, 4, 9), True),
    (q(False, 4, 9), q(False, 5, 0), False),
    (q(True, 5, 0), q(True, 0, 3), True),
    (q(True, 0, 3), q(True, 5, 0), False),
    # Same verification and index: the lower forwarded count wins.
    (q(False, 3, 2), q(False, 3, 1), True),
    (q(False, 3, 1), q(False, 3, 2), False),
    (q(True, 0, 1), q(True, 0, 0), True),
    (q(True, 0, 0), q(True, 0, 1), False),
    # A full tie keeps the stored key.
    (q(False, 0, 0), q(False, 0, 0), False),
    (q(True, 7, 2), q(True, 7, 2), False),
]


@pytest.mark.parametrize(("stored", "candidate", "replace"), REPLACEMENT_CASES)
def test_should_replace(stored: KeyQuality, candidate: KeyQuality, replace: bool) -> None:
    assert should_replace(stored, candidate) is replace


def test_should_replace_is_a_strict_order() -> None:
    """For any two different qualities exactly one direction replaces; equal never does."""
    qualities = [q(v, f, c) for v in (False, True) for f in (0, 1, 5) for c in (0, 1, 3)]
    for a in qualities:
        for b in qualities:
            if a == b:
                assert not should_replace(a, b)
            else:
                assert should_replace(a, b) != should_replace(b, a), (a, b)


# auth_data


def test_auth_data_accepts_a_curve25519_public_key() -> None:
    check_auth_data(MEGOLM_BACKUP_V1, {"public_key": PUBLIC_KEY})
    check_auth_data(
        MEGOLM_BACKUP_V1,
        {"public_key": PUBLIC_KEY, "signatures": {"@a:b": {"ed25519:DEV": "sig"}}},
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "auth_data",
    [
        {},
        {"public_key": None},
        {"public_key": 12345},
        {"public_key": ""},
        {"public_key": _b64(os.urandom(31))},
        {"public_key": _b64(os.urandom(33))},
        {"public_key": PUBLIC_KEY + "="},  # padded: the spec says unpadded base64
        {"public_key": PUBLIC_KEY[:4] + "!!!!" + PUBLIC_KEY[4:]},  # not base64 at all
        {"public_key": PUBLIC_KEY[:10] + " " + PUBLIC_KEY[10:]},
        {"public_key": "not base64 at all"},
        {"public_key": [PUBLIC_KEY]},
    ],
)
def test_auth_data_refuses_anything_but_a_32_byte_unpadded_key(auth_data: Any) -> None:
    with pytest.raises(InvalidBackupData):
        check_auth_data(MEGOLM_BACKUP_V1, auth_data)


@pytest.mark.parametrize("auth_data", [None, [], "public_key", 3])
def test_auth_data_must_be_an_object(auth_data: Any) -> None:
    with pytest.raises(InvalidBackupData):
        check_auth_data(MEGOLM_BACKUP_V1, auth_data)
    with pytest.raises(InvalidBackupData):
        check_auth_data("org.example.other", auth_data)


def test_other_algorithms_auth_data_is_not_inspected() -> None:
    check_auth_data("org.example.other", {})
    check_auth_data("org.example.other", {"public_key": "short", "anything": [1, 2]})


# key data

_MISSING = object()


def key_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "first_message_index": 3,
        "forwarded_count": 1,
        "is_verified": True,
        "session_data": encrypt_for_backup(PUBLIC_KEY, {"session_key": "x"}),
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not _MISSING}


def test_valid_key_data_gives_its_quality() -> None:
    assert check_key_data(MEGOLM_BACKUP_V1, key_data()) == q(True, 3, 1)
    assert check_key_data(
        MEGOLM_BACKUP_V1, key_data(is_verified=False, first_message_index=0, forwarded_count=0)
    ) == q(False, 0, 0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"first_message_index": _MISSING},
        {"forwarded_count": _MISSING},
        {"is_verified": _MISSING},
        {"session_data": _MISSING},
        {"first_message_index": None},
        {"first_message_index": "3"},
        {"first_message_index": 3.0},
        {"first_message_index": True},
        {"first_message_index": -1},
        {"first_message_index": 2**63},  # does not fit the database's integers
        {"forwarded_count": 2**64 + 5},
        {"forwarded_count": "0"},
        {"forwarded_count": -3},
        {"forwarded_count": False},
        {"is_verified": 1},
        {"is_verified": "true"},
        {"is_verified": None},
        {"session_data": "opaque"},
        {"session_data": []},
    ],
)
def test_malformed_key_data_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidBackupData):
        check_key_data(MEGOLM_BACKUP_V1, key_data(**overrides))
    # The fields every algorithm shares are checked for other algorithms too.
    with pytest.raises(InvalidBackupData):
        check_key_data("org.example.other", key_data(**overrides))


@pytest.mark.parametrize("data", [None, [], "x", 1])
def test_key_data_must_be_an_object(data: Any) -> None:
    with pytest.raises(InvalidBackupData):
        check_key_data(MEGOLM_BACKUP_V1, data)


def _session_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(encrypt_for_backup(PUBLIC_KEY, {"session_key": "x"}))
    for name, value in changes.items():
        if value is _MISSING:
            del data[name]
        else:
            data[name] = value
    return data


@pytest.mark.parametrize(
    "session_data",
    [
        _session_data(session_key="AgAAAAAQcQ6XrFJk6Prm8FikZDqfry"),  # a plaintext key leaking
        _session_data(extra="x"),
        _session_data(mac=_MISSING),
        _session_data(ciphertext=_MISSING),
        _session_data(ephemeral=_MISSING),
        {},
        {"session_key": "AgAAAAAQcQ6XrFJk6Prm8FikZDqfry", "algorithm": "m.megolm.v1.aes-sha2"},
        _session_data(ephemeral=_b64(os.urandom(31))),
        _session_data(ephemeral=_b64(os.urandom(33))),
        _session_data(ephemeral=12),
        _session_data(ciphertext="***not base64***"),
        _session_data(ciphertext="QUJDR"),  # 4n + 1 characters: not base64 of anything
        _session_data(mac="Q"),
        _session_data(ciphertext=""),
        _session_data(ciphertext=None),
        _session_data(mac="!!"),
        _session_data(mac=["x"]),
    ],
)
def test_megolm_session_data_must_be_exactly_the_encrypted_blob(
    session_data: dict[str, Any],
) -> None:
    with pytest.raises(InvalidBackupData):
        check_key_data(MEGOLM_BACKUP_V1, key_data(session_data=session_data))


def test_other_algorithms_session_data_is_not_inspected() -> None:
    for session_data in ({}, {"session_key": "plain"}, {"anything": [1, {"nested": None}]}):
        assert check_key_data("org.example.other", key_data(session_data=session_data)) == q(
            True, 3, 1
        )
