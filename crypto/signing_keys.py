"""The server's ed25519 signing key, in the one-line format operators know from Synapse."""

from __future__ import annotations

import os

from signedjson.key import (
    generate_signing_key,
    read_signing_keys,
    write_signing_keys,
)
from signedjson.types import SigningKey


def read_signing_key(path: str) -> SigningKey:
    with open(path, encoding="utf-8") as f:
        keys = read_signing_keys(f)
    if not keys:
        raise ValueError(f"{path} contains no signing key")
    return keys[0]


def ensure_signing_key(path: str) -> bool:
    """Write a fresh key to ``path`` unless one exists. Returns True if a key was written.

    An existing key is never overwritten: losing it would make every remote server
    distrust events this server signed.
    """
    if os.path.exists(path):
        return False
    key = generate_signing_key("a_" + os.urandom(3).hex())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        write_signing_keys(f, [key])
    return True
