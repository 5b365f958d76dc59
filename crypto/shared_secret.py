"""The MAC of shared-secret registration, as Synapse defines it (so existing tools work):
HMAC-SHA1 over ``nonce NUL user NUL password NUL admin|notadmin [NUL user_type]``."""

from __future__ import annotations

import hashlib
import hmac


def registration_mac(
    secret: str, nonce: str, user: str, password: str, admin: bool, user_type: str | None = None
) -> str:
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    for part in (nonce, user, password):
        mac.update(part.encode("utf-8") + b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    if user_type:
        mac.update(b"\x00" + user_type.encode("utf-8"))
    return mac.hexdigest()
