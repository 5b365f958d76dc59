"""Password hashing with bcrypt. These calls are slow on purpose: run them off the reactor."""

from __future__ import annotations

import base64
import hashlib
import hmac

import bcrypt


def _prepare(password: str, pepper: str) -> bytes:
    # bcrypt only reads 72 bytes; pre-hash so that long passwords keep all their entropy.
    # base64 of a SHA-256 digest is 44 bytes and contains no NUL bytes.
    digest = hmac.new(pepper.encode(), password.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest)


def hash_password(password: str, rounds: int, pepper: str = "") -> str:
    return bcrypt.hashpw(_prepare(password, pepper), bcrypt.gensalt(rounds)).decode("ascii")


def check_password(password: str, stored_hash: str, pepper: str = "") -> bool:
    try:
        return bcrypt.checkpw(_prepare(password, pepper), stored_hash.encode("ascii"))
    except ValueError:
        # A malformed stored hash matches nothing.
        return False
