"""The user's side of key backup, checked against the spec's published test vector and
against independent implementations: libolm (python-olm) for the backup algorithm,
matrix-nio for the key-export file, and the spec's steps written out here for secret
storage."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from typing import Any

import base58
import olm
import olm.pk
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from nio.crypto import key_export as nio_key_export

from keybackup.client_crypto import (
    RecoveryKeyError,
    backup_public_key,
    decode_recovery_key,
    decrypt_from_backup,
    encode_recovery_key,
    encrypt_for_backup,
    export_sessions,
    import_sessions,
    key_from_passphrase,
    ssss_decrypt,
    ssss_encrypt,
    ssss_key_matches,
)

# The test vector published with the spec's key representation / backup algorithm.
VECTOR_PRIVATE_KEY = base64.b64decode("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=")
VECTOR_RECOVERY_KEY = "EsTc LW2K PGiF wKEA 3As5 g5c4 BXwk qeeJ ZJV8 Q9fu gUMN UE4d"
VECTOR_PUBLIC_KEY = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo"

SESSION = {
    "algorithm": "m.megolm.v1.aes-sha2",
    "sender_key": "RF3s+E7RkTQTGF2d8Deol0FkQvgII2aJDf3/Jp5mxVU",
    "sender_claimed_keys": {"ed25519": "aj40p+aw64yPIdsxoog8jhPu9i7l7NcFRecuOQblE3Y"},
    "forwarding_curve25519_key_chain": [],
    "session_key": "AgAAAADxKHa9uFxcXzwYoNueL5Xqi69IkD4sni8Llf",
}


def olm_decryption_for(private_key: bytes, monkeypatch: pytest.MonkeyPatch) -> olm.PkDecryption:
    """A libolm PkDecryption holding ``private_key`` (it reads its key from URANDOM)."""
    with monkeypatch.context() as m:
        m.setattr(olm.pk, "URANDOM", lambda n: private_key[:n])
        return olm.PkDecryption()


# Recovery keys


def test_published_vector() -> None:
    assert encode_recovery_key(VECTOR_PRIVATE_KEY) == VECTOR_RECOVERY_KEY
    assert decode_recovery_key(VECTOR_RECOVERY_KEY) == VECTOR_PRIVATE_KEY
    assert backup_public_key(VECTOR_PRIVATE_KEY) == VECTOR_PUBLIC_KEY


def test_published_vector_public_key_agrees_with_libolm(monkeypatch: pytest.MonkeyPatch) -> None:
    assert olm_decryption_for(VECTOR_PRIVATE_KEY, monkeypatch).public_key == VECTOR_PUBLIC_KEY


@pytest.mark.parametrize(
    "text",
    [
        VECTOR_RECOVERY_KEY.replace(" ", ""),
        "  " + VECTOR_RECOVERY_KEY + "\n",
        VECTOR_RECOVERY_KEY.replace(" ", "\t  "),
        " ".join(VECTOR_RECOVERY_KEY.replace(" ", "")),
    ],
)
def test_whitespace_is_ignored(text: str) -> None:
    assert decode_recovery_key(text) == VECTOR_PRIVATE_KEY


def test_encoding_follows_the_appendix() -> None:
    key = os.urandom(32)
    encoded = encode_recovery_key(key)
    groups = encoded.split(" ")
    assert all(len(g) == 4 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 4
    raw = base58.b58decode("".join(groups))  # the Bitcoin alphabet
    assert raw[:2] == b"\x8b\x01" and raw[2:34] == key and len(raw) == 35
    parity = 0
    for byte in raw[:34]:
        parity ^= byte
    assert raw[34] == parity
    assert decode_recovery_key(encoded) == key


def _encode_raw(raw: bytes) -> str:
    return base58.b58encode(raw).decode()


def _with_parity(body: bytes) -> bytes:
    parity = 0
    for byte in body:
        parity ^= byte
    return body + bytes([parity])


def test_typo_is_refused() -> None:
    # Change one character of the published key (a plausible typo).
    chars = list(VECTOR_RECOVERY_KEY)
    chars[5] = "M" if chars[5] != "M" else "N"
    with pytest.raises(RecoveryKeyError):
        decode_recovery_key("".join(chars))
    # A flipped bit in the key with the original parity byte fails exactly the parity check.
    raw = bytearray(_with_parity(b"\x8b\x01" + VECTOR_PRIVATE_KEY))
    raw[10] ^= 0x04
    with pytest.raises(RecoveryKeyError, match="parity"):
        decode_recovery_key(_encode_raw(bytes(raw)))


@pytest.mark.parametrize(
    "raw",
    [
        _with_parity(b"\x8b\x02" + VECTOR_PRIVATE_KEY),
        _with_parity(b"\x8c\x01" + VECTOR_PRIVATE_KEY),
        _with_parity(b"\x01\x8b" + VECTOR_PRIVATE_KEY),
        _with_parity(b"\x8b\x01" + VECTOR_PRIVATE_KEY[:31]),
        _with_parity(b"\x8b\x01" + VECTOR_PRIVATE_KEY + b"\x00"),
        _with_parity(VECTOR_PRIVATE_KEY),
    ],
)
def test_wrong_prefix_or_length_is_refused(raw: bytes) -> None:
    with pytest.raises(RecoveryKeyError):
        decode_recovery_key(_encode_raw(raw))


@pytest.mark.parametrize("text", ["", "0OIl", VECTOR_RECOVERY_KEY.replace("E", "0", 1), "!!!!"])
def test_not_base58_is_refused(text: str) -> None:
    with pytest.raises(RecoveryKeyError):
        decode_recovery_key(text)


# m.megolm_backup.v1.curve25519-aes-sha2


def test_encrypt_for_backup_decrypts_with_libolm() -> None:
    decryption = olm.PkDecryption()
    session_data = encrypt_for_backup(decryption.public_key, SESSION)
    assert set(session_data) == {"ephemeral", "ciphertext", "mac"}
    assert all("=" not in v for v in session_data.values())  # unpadded base64
    message = olm.PkMessage(
        session_data["ephemeral"], session_data["mac"], session_data["ciphertext"]
    )
    assert json.loads(decryption.decrypt(message)) == SESSION


def test_libolm_encryption_decrypts_with_decrypt_from_backup() -> None:
    message = olm.PkEncryption(VECTOR_PUBLIC_KEY).encrypt(json.dumps(SESSION))
    session_data = {
        "ephemeral": message.ephemeral_key,
        "ciphertext": message.ciphertext,
        "mac": message.mac,
    }
    assert decrypt_from_backup(VECTOR_PRIVATE_KEY, session_data) == SESSION


def test_round_trip_with_the_vector_key() -> None:
    session_data = encrypt_for_backup(VECTOR_PUBLIC_KEY, SESSION)
    assert decrypt_from_backup(VECTOR_PRIVATE_KEY, session_data) == SESSION
    # A fresh ephemeral key each time.
    assert encrypt_for_backup(VECTOR_PUBLIC_KEY, SESSION) != session_data


def test_mac_mismatch_is_refused() -> None:
    session_data = encrypt_for_backup(VECTOR_PUBLIC_KEY, SESSION)
    mac = bytearray(base64.b64decode(session_data["mac"] + "="))
    mac[0] ^= 1
    tampered = {**session_data, "mac": base64.b64encode(mac).decode().rstrip("=")}
    with pytest.raises(ValueError, match="MAC"):
        decrypt_from_backup(VECTOR_PRIVATE_KEY, tampered)
    # Another backup's key does not open it either.
    with pytest.raises(ValueError, match="MAC"):
        decrypt_from_backup(os.urandom(32), session_data)


@pytest.mark.parametrize("missing", ["ephemeral", "ciphertext", "mac"])
def test_malformed_session_data_is_a_value_error(missing: str) -> None:
    session_data = dict(encrypt_for_backup(VECTOR_PUBLIC_KEY, SESSION))
    del session_data[missing]
    with pytest.raises(ValueError):
        decrypt_from_backup(VECTOR_PRIVATE_KEY, session_data)


# Secret storage, m.secret_storage.v1.aes-hmac-sha2, written out from the spec


def _b64(data: bytes, padded: bool = False) -> str:
    text = base64.b64encode(data).decode()
    return text if padded else text.rstrip("=")


def reference_encrypt(
    key: bytes, name: str, secret: bytes, iv: bytes, padded: bool = False
) -> dict[str, str]:
    derived = HKDF(algorithm=hashes.SHA256(), length=64, salt=b"\0" * 32, info=name.encode())
    material = derived.derive(key)
    aes_key, mac_key = material[:32], material[32:]
    encryptor = Cipher(algorithms.AES(aes_key), modes.CTR(iv)).encryptor()
    ciphertext = encryptor.update(secret) + encryptor.finalize()
    mac = hmac.new(mac_key, ciphertext, hashlib.sha256).digest()
    return {
        "iv": _b64(iv, padded),
        "ciphertext": _b64(ciphertext, padded),
        "mac": _b64(mac, padded),
    }


def reference_key_description(key: bytes, iv: bytes, padded: bool = False) -> dict[str, Any]:
    check = reference_encrypt(key, "", b"\0" * 32, iv, padded)
    return {
        "algorithm": "m.secret_storage.v1.aes-hmac-sha2",
        "iv": check["iv"],
        "mac": check["mac"],
    }


def random_iv(bit63: bool = False) -> bytes:
    iv = bytearray(os.urandom(16))
    iv[8] = iv[8] | 0x80 if bit63 else iv[8] & 0x7F
    return bytes(iv)


def test_ssss_encrypt_matches_the_spec_steps() -> None:
    key, iv = os.urandom(32), random_iv()
    secret = _b64(os.urandom(32)).encode()
    assert ssss_encrypt(key, "m.megolm_backup.v1", secret, iv) == reference_encrypt(
        key, "m.megolm_backup.v1", secret, iv
    )


def test_ssss_random_iv_has_bit_63_clear() -> None:
    for _ in range(32):
        encrypted = ssss_encrypt(os.urandom(32), "name", b"secret")
        iv = base64.b64decode(encrypted["iv"] + "==")
        assert len(iv) == 16
        assert iv[8] & 0x80 == 0


def test_ssss_round_trip_and_refusals() -> None:
    key = os.urandom(32)
    secret = _b64(os.urandom(32)).encode()
    encrypted = ssss_encrypt(key, "m.megolm_backup.v1", secret)
    assert ssss_decrypt(key, "m.megolm_backup.v1", encrypted) == secret
    with pytest.raises(RecoveryKeyError):
        ssss_decrypt(os.urandom(32), "m.megolm_backup.v1", encrypted)
    with pytest.raises(RecoveryKeyError):  # the secret's name is bound into the keys
        ssss_decrypt(key, "m.cross_signing.master", encrypted)
    ciphertext = bytearray(base64.b64decode(encrypted["ciphertext"] + "=="))
    ciphertext[0] ^= 1
    with pytest.raises(RecoveryKeyError):
        ssss_decrypt(key, "m.megolm_backup.v1", {**encrypted, "ciphertext": _b64(ciphertext)})


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("bit63", [False, True])
def test_ssss_decrypts_other_implementations_output(padded: bool, bit63: bool) -> None:
    """The spec: clients must accept padded base64 too; the stored IV is used as it is."""
    key = os.urandom(32)
    secret = b"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo"
    encrypted = reference_encrypt(key, "m.megolm_backup.v1", secret, random_iv(bit63), padded)
    assert ssss_decrypt(key, "m.megolm_backup.v1", encrypted) == secret


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("bit63", [False, True])
def test_ssss_key_check(padded: bool, bit63: bool) -> None:
    """The check repeats the spec's steps with the stored IV: the MAC matches iff the key
    is right (whatever the IV's bit 63, and in either base64 encoding)."""
    key = os.urandom(32)
    description = reference_key_description(key, random_iv(bit63), padded)
    assert ssss_key_matches(key, description)
    assert not ssss_key_matches(os.urandom(32), description)


def test_ssss_key_check_of_our_own_description() -> None:
    key = os.urandom(32)
    check = ssss_encrypt(key, "", b"\0" * 32)
    description = {"algorithm": "m.secret_storage.v1.aes-hmac-sha2", **check}
    assert ssss_key_matches(key, description)
    assert not ssss_key_matches(os.urandom(32), description)
    # Without iv and mac there is nothing to check against: the spec says assume valid.
    assert ssss_key_matches(os.urandom(32), {"algorithm": "m.secret_storage.v1.aes-hmac-sha2"})


def test_key_from_passphrase_is_pbkdf2_sha512() -> None:
    for bits in (256, 512):
        expected = PBKDF2HMAC(
            algorithm=hashes.SHA512(), length=bits // 8, salt=b"MmMsAlty", iterations=1000
        ).derive(b"correct horse")
        assert key_from_passphrase("correct horse", "MmMsAlty", 1000, bits) == expected
    assert len(key_from_passphrase("p", "s", 10)) == 32
    assert key_from_passphrase("p", "s", 10) != key_from_passphrase("p", "s", 11)
    assert key_from_passphrase("p", "s", 10) != key_from_passphrase("p", "t", 10)


# Key export files


SESSIONS = [
    {**SESSION, "room_id": f"!room{i}:example.org", "session_id": f"session{i}/+x"}
    for i in range(3)
]


def test_export_import_round_trip() -> None:
    text = export_sessions(SESSIONS, "export passphrase", rounds=1000)
    assert import_sessions(text, "export passphrase") == SESSIONS


def test_export_wrong_passphrase_is_refused() -> None:
    text = export_sessions(SESSIONS, "export passphrase", rounds=1000)
    with pytest.raises(ValueError):
        import_sessions(text, "another passphrase")


def test_export_tampering_is_refused() -> None:
    text = export_sessions(SESSIONS, "pw", rounds=1000)
    lines = text.splitlines()
    body = bytearray(base64.b64decode("".join(lines[1:-1])))
    body[40] ^= 1
    encoded = base64.b64encode(bytes(body)).decode()
    with pytest.raises(ValueError):
        import_sessions("\n".join([lines[0], encoded, lines[-1]]), "pw")


def test_export_file_follows_the_spec_format() -> None:
    text = export_sessions(SESSIONS, "pw", rounds=1234)
    lines = text.split("\n")
    assert lines[0] == "-----BEGIN MEGOLM SESSION DATA-----"
    assert lines[-2:] == ["-----END MEGOLM SESSION DATA-----", ""]
    body = base64.b64decode("".join(lines[1:-2]))
    assert body[0] == 1
    salt, iv = body[1:17], body[17:33]
    assert iv[8] & 0x80 == 0
    assert struct.unpack(">I", body[33:37])[0] == 1234
    derived = hashlib.pbkdf2_hmac("sha512", b"pw", salt, 1234, 64)
    assert hmac.new(derived[32:], body[:-32], hashlib.sha256).digest() == body[-32:]
    decryptor = Cipher(algorithms.AES(derived[:32]), modes.CTR(iv)).decryptor()
    assert json.loads(decryptor.update(body[37:-32]) + decryptor.finalize()) == SESSIONS


def test_export_interoperates_with_matrix_nio() -> None:
    text = export_sessions(SESSIONS, "pw", rounds=1000)
    lines = text.strip().splitlines()
    assert json.loads(nio_key_export.decrypt("".join(lines[1:-1]), "pw")) == SESSIONS
    theirs = nio_key_export.encrypt(json.dumps(SESSIONS).encode(), "pw", count=1000)
    framed = f"-----BEGIN MEGOLM SESSION DATA-----\n{theirs}\n-----END MEGOLM SESSION DATA-----"
    assert import_sessions(framed, "pw") == SESSIONS
