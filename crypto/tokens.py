"""Access tokens and other secrets handed to clients: random, and stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets
import string

_TOKEN_BYTES = 32  # 256 bits
_DEVICE_ID_ALPHABET = string.ascii_uppercase


def mint_access_token(prefix: str = "syt") -> str:
    """A bearer token; the prefix makes leaked tokens recognisable to secret scanners."""
    return f"{prefix}_{secrets.token_urlsafe(_TOKEN_BYTES)}"


def hash_token(token: str) -> str:
    """What the database keeps in place of a token: a leak of the table grants nothing."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def mint_device_id() -> str:
    return "".join(secrets.choice(_DEVICE_ID_ALPHABET) for _ in range(10))


def mint_opaque_id(nbytes: int = 16) -> str:
    return secrets.token_urlsafe(nbytes)
