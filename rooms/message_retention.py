"""A user's own message-retention setting (account data ``org.homeserver.message_retention``):
which of their messages a background job deletes for them, as plain data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SETTING = "org.homeserver.message_retention"


@dataclass(frozen=True)
class RetentionSetting:
    max_age_ms: int
    keep_pinned: bool = True
    keep_direct: bool = False


def parse_setting(content: Any) -> RetentionSetting | None:
    """The setting, or None when it is off or not well formed (then nothing is deleted)."""
    if not isinstance(content, dict):
        return None
    max_age = content.get("max_age")
    if not isinstance(max_age, int) or isinstance(max_age, bool) or max_age <= 0:
        return None
    keep_pinned = content.get("keep_pinned", True)
    keep_direct = content.get("keep_direct", False)
    if not isinstance(keep_pinned, bool) or not isinstance(keep_direct, bool):
        return None
    return RetentionSetting(max_age, keep_pinned, keep_direct)
