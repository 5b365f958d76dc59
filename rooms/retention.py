"""A room's message retention (MSC1763): how long its messages are kept, from its
``m.room.retention`` state within the server's bounds, as plain data."""

from __future__ import annotations

from typing import Any


def max_lifetime(
    content: Any,
    default: int | None,
    allowed_min: int | None,
    allowed_max: int | None,
) -> int | None:
    """Milliseconds a message of the room is kept (None: for ever). The room's own
    ``max_lifetime`` wins over the server default; the server's bounds hold either way."""
    value = content.get("max_lifetime") if isinstance(content, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        value = default
    if value is None:
        return None
    if allowed_min is not None:
        value = max(value, allowed_min)
    if allowed_max is not None:
        value = min(value, allowed_max)
    return value
