"""Canonical JSON, hashes and JSON signatures: the building blocks of signed events."""

from __future__ import annotations

import hashlib
from typing import Any

from canonicaljson import encode_canonical_json
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json
from signedjson.types import SigningKey
from unpaddedbase64 import decode_base64, encode_base64

JsonDict = dict[str, Any]


def canonical_json(value: Any) -> bytes:
    """The spec's canonical encoding: sorted keys, no spaces, UTF-8, integers only."""
    return encode_canonical_json(value)


def sha256_b64(data: bytes, urlsafe: bool = False) -> str:
    return encode_base64(hashlib.sha256(data).digest(), urlsafe=urlsafe)


def sign(obj: JsonDict, server_name: str, key: SigningKey) -> JsonDict:
    """Return a copy of ``obj`` with this server's signature added under ``signatures``."""
    return sign_json(dict(obj), server_name, key)


def verify(obj: JsonDict, server_name: str, key_id: str, public_key_b64: str) -> bool:
    """True if ``obj`` carries a valid signature by ``server_name`` with that key."""
    try:
        verify_key = decode_verify_key_bytes(key_id, decode_base64(public_key_b64))
        verify_signed_json(obj, server_name, verify_key)
        return True
    except (SignatureVerifyException, ValueError, KeyError, TypeError):
        return False
