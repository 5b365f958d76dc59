"""The user's side of key backup, with ``cryptography``: the recovery key, passphrases,
secret storage, the ``m.megolm_backup.v1.curve25519-aes-sha2`` algorithm and the Megolm
key-export file. This code runs on the user's machine; the server never has these keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from typing import Any

import base58
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from unpaddedbase64 import decode_base64, encode_base64

JsonDict = dict[str, Any]

_RECOVERY_PREFIX = b"\x8b\x01"
_ZERO_SALT = b"\x00" * 32


class RecoveryKeyError(ValueError):
    """The recovery key is malformed, or does not open this backup or secret store."""


# Recovery keys


def encode_recovery_key(private_key: bytes) -> str:
    """``EsTc LW2K ...``: base58 of 0x8B 0x01, the key and a parity byte, in groups of four."""
    body = _RECOVERY_PREFIX + private_key
    parity = 0
    for byte in body:
        parity ^= byte
    encoded = base58.b58encode(body + bytes([parity])).decode("ascii")
    return " ".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def decode_recovery_key(recovery_key: str) -> bytes:
    try:
        raw = base58.b58decode("".join(recovery_key.split()))
    except ValueError:
        raise RecoveryKeyError("the recovery key contains characters outside base58") from None
    if len(raw) != 35 or raw[:2] != _RECOVERY_PREFIX:
        raise RecoveryKeyError("this is not a recovery key")
    parity = 0
    for byte in raw:
        parity ^= byte
    if parity != 0:
        raise RecoveryKeyError("the recovery key has a typo (its parity check fails)")
    return raw[2:34]


def key_from_passphrase(passphrase: str, salt: str, iterations: int, bits: int = 256) -> bytes:
    """The ``m.pbkdf2`` derivation: PBKDF2-HMAC-SHA-512."""
    return hashlib.pbkdf2_hmac("sha512", passphrase.encode(), salt.encode(), iterations, bits // 8)


def backup_public_key(private_key: bytes) -> str:
    public = X25519PrivateKey.from_private_bytes(private_key).public_key()
    return encode_base64(
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


# m.megolm_backup.v1.curve25519-aes-sha2


def _hkdf(secret: bytes, info: bytes, length: int, salt: bytes = _ZERO_SALT) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def encrypt_for_backup(public_key_b64: str, plaintext: JsonDict) -> JsonDict:
    """Encrypt a session key to the backup's public key (what a client uploads)."""
    ephemeral = X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(decode_base64(public_key_b64)))
    keys = _hkdf(shared, b"", 80)
    aes_key, mac_key, iv = keys[:32], keys[32:64], keys[64:]
    padder = padding.PKCS7(128).padder()
    data = padder.update(json.dumps(plaintext).encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(data) + encryptor.finalize()
    # The spec's MAC is over an empty string (a historical libolm quirk, kept for compatibility).
    mac = hmac.new(mac_key, b"", hashlib.sha256).digest()[:8]
    ephemeral_public = ephemeral.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {
        "ephemeral": encode_base64(ephemeral_public),
        "ciphertext": encode_base64(ciphertext),
        "mac": encode_base64(mac),
    }


def decrypt_from_backup(private_key: bytes, session_data: JsonDict) -> JsonDict:
    try:
        ephemeral = X25519PublicKey.from_public_bytes(decode_base64(session_data["ephemeral"]))
        ciphertext = decode_base64(session_data["ciphertext"])
        mac = decode_base64(session_data["mac"])
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"malformed session_data: {e}") from None
    shared = X25519PrivateKey.from_private_bytes(private_key).exchange(ephemeral)
    keys = _hkdf(shared, b"", 80)
    aes_key, mac_key, iv = keys[:32], keys[32:64], keys[64:]
    if not hmac.compare_digest(hmac.new(mac_key, b"", hashlib.sha256).digest()[:8], mac):
        raise ValueError("MAC mismatch: this session was not encrypted to this backup key")
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    plaintext: JsonDict = json.loads(unpadder.update(padded) + unpadder.finalize())
    return plaintext


# Secret storage (m.secret_storage.v1.aes-hmac-sha2)


def _ssss_keys(key: bytes, name: str) -> tuple[bytes, bytes]:
    derived = _hkdf(key, name.encode(), 64)
    return derived[:32], derived[32:]


def ssss_encrypt(key: bytes, name: str, secret: bytes, iv: bytes | None = None) -> JsonDict:
    aes_key, mac_key = _ssss_keys(key, name)
    if iv is None:
        counter = bytearray(os.urandom(16))
        counter[8] &= 0x7F  # the spec clears bit 63 of a new IV
    else:
        counter = bytearray(iv)  # a given IV (the key check's) is used as it is
    encryptor = Cipher(algorithms.AES(aes_key), modes.CTR(bytes(counter))).encryptor()
    ciphertext = encryptor.update(secret) + encryptor.finalize()
    mac = hmac.new(mac_key, ciphertext, hashlib.sha256).digest()
    return {
        "iv": encode_base64(bytes(counter)),
        "ciphertext": encode_base64(ciphertext),
        "mac": encode_base64(mac),
    }


def ssss_decrypt(key: bytes, name: str, encrypted: JsonDict) -> bytes:
    aes_key, mac_key = _ssss_keys(key, name)
    ciphertext = decode_base64(encrypted["ciphertext"])
    expected = hmac.new(mac_key, ciphertext, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, decode_base64(encrypted["mac"])):
        raise RecoveryKeyError(f"the key does not open the secret {name!r}")
    decryptor = Cipher(
        algorithms.AES(aes_key), modes.CTR(decode_base64(encrypted["iv"]))
    ).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def ssss_key_matches(key: bytes, key_description: JsonDict) -> bool:
    """Check a secret-storage key against its ``iv``/``mac`` (an encryption of 32 zero bytes)."""
    if "iv" not in key_description or "mac" not in key_description:
        return True  # nothing to check against; decryption will tell
    check = ssss_encrypt(key, "", b"\x00" * 32, decode_base64(key_description["iv"]))
    return hmac.compare_digest(decode_base64(check["mac"]), decode_base64(key_description["mac"]))


# Megolm key export files


_EXPORT_HEADER = "-----BEGIN MEGOLM SESSION DATA-----"
_EXPORT_FOOTER = "-----END MEGOLM SESSION DATA-----"


def export_sessions(sessions: list[JsonDict], passphrase: str, rounds: int = 500_000) -> str:
    """The encrypted key-export format that Element and other clients import."""
    salt, iv = os.urandom(16), bytearray(os.urandom(16))
    iv[8] &= 0x7F
    derived = hashlib.pbkdf2_hmac("sha512", passphrase.encode(), salt, rounds, 64)
    aes_key, mac_key = derived[:32], derived[32:]
    encryptor = Cipher(algorithms.AES(aes_key), modes.CTR(bytes(iv))).encryptor()
    ciphertext = encryptor.update(json.dumps(sessions).encode()) + encryptor.finalize()
    body = b"\x01" + salt + bytes(iv) + struct.pack(">I", rounds) + ciphertext
    body += hmac.new(mac_key, body, hashlib.sha256).digest()
    encoded = encode_base64(body) + "=" * (-len(encode_base64(body)) % 4)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return "\n".join([_EXPORT_HEADER, *lines, _EXPORT_FOOTER]) + "\n"


def import_sessions(text: str, passphrase: str) -> list[JsonDict]:
    """Read an export file (to check what was written, and for tests)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if lines[0] != _EXPORT_HEADER or lines[-1] != _EXPORT_FOOTER:
        raise ValueError("not a Megolm session export")
    body = decode_base64("".join(lines[1:-1]).rstrip("="))
    if body[0] != 1:
        raise ValueError("unknown export format version")
    salt, iv, rounds = body[1:17], body[17:33], struct.unpack(">I", body[33:37])[0]
    ciphertext, mac = body[37:-32], body[-32:]
    derived = hashlib.pbkdf2_hmac("sha512", passphrase.encode(), salt, rounds, 64)
    if not hmac.compare_digest(hmac.new(derived[32:], body[:-32], hashlib.sha256).digest(), mac):
        raise ValueError("wrong passphrase or corrupted export")
    decryptor = Cipher(algorithms.AES(derived[:32]), modes.CTR(iv)).decryptor()
    sessions: list[JsonDict] = json.loads(decryptor.update(ciphertext) + decryptor.finalize())
    return sessions
