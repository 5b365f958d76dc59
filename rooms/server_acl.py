"""Server ACLs (``m.room.server_acl``): may this server take part in the room?"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """``*`` any run of characters, ``?`` one character; matched case-insensitively."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("^" + "".join(parts) + "$", re.IGNORECASE)


def _host(server_name: str) -> str:
    if server_name.startswith("["):
        return server_name[1 : server_name.find("]")] if "]" in server_name else server_name
    return server_name.rsplit(":", 1)[0] if server_name.count(":") == 1 else server_name


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def server_allowed(server_name: str, acl_content: Any) -> bool:
    """The spec's rules: IP literals refused unless allowed, then deny before allow; the
    port is not part of what is matched. No (or a malformed) ACL allows everyone."""
    if not isinstance(acl_content, dict):
        return True
    host = _host(server_name)
    if acl_content.get("allow_ip_literals", True) is False and _is_ip_literal(host):
        return False
    deny, allow = acl_content.get("deny"), acl_content.get("allow")
    if isinstance(deny, list) and any(isinstance(p, str) and _glob(p).match(host) for p in deny):
        return False
    return isinstance(allow, list) and any(
        isinstance(p, str) and _glob(p).match(host) for p in allow
    )
