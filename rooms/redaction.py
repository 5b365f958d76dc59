"""The redaction algorithm, per room version: what of an event survives being redacted."""

from __future__ import annotations

from typing import Any

from rooms.versions import RoomVersion

JsonDict = dict[str, Any]

_TOP_LEVEL_OLD = frozenset(
    {
        "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
        "signatures", "depth", "prev_events", "prev_state", "auth_events", "origin",
        "origin_server_ts", "membership",
    }
)  # fmt: skip
_TOP_LEVEL_V11 = frozenset(
    {
        "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
        "signatures", "depth", "prev_events", "auth_events", "origin_server_ts",
    }
)  # fmt: skip
_POWER_LEVEL_KEYS = ("ban", "events", "events_default", "kick", "redact", "state_default",
                     "users", "users_default")  # fmt: skip


def _content_keys(event_type: str, version: RoomVersion) -> tuple[str, ...] | None:
    """The content keys kept for ``event_type``; None keeps them all."""
    v11 = version.updated_redaction_rules
    if event_type == "m.room.member":
        keys: tuple[str, ...] = ("membership",)
        if version.redaction_keeps_authorised_via:
            keys += ("join_authorised_via_users_server",)
        return keys
    if event_type == "m.room.create":
        return None if v11 else ("creator",)
    if event_type == "m.room.join_rules":
        return ("join_rule", "allow") if version.redaction_keeps_join_rule_allow else ("join_rule",)
    if event_type == "m.room.power_levels":
        return (*_POWER_LEVEL_KEYS, "invite") if v11 else _POWER_LEVEL_KEYS
    if event_type == "m.room.history_visibility":
        return ("history_visibility",)
    if event_type == "m.room.aliases" and version.special_case_aliases_auth:
        return ("aliases",)
    if event_type == "m.room.redaction" and v11:
        return ("redacts",)
    return ()


def redact(event: JsonDict, version: RoomVersion) -> JsonDict:
    """Return the redacted copy of ``event`` (a new dict; the input is not changed)."""
    allowed = _TOP_LEVEL_V11 if version.updated_redaction_rules else _TOP_LEVEL_OLD
    redacted = {k: v for k, v in event.items() if k in allowed}
    content = event.get("content")
    if not isinstance(content, dict):
        content = {}
    keep = _content_keys(str(event.get("type", "")), version)
    if keep is None:
        new_content = dict(content)
    else:
        new_content = {k: content[k] for k in keep if k in content}
        if (
            version.updated_redaction_rules
            and event.get("type") == "m.room.member"
            and isinstance(content.get("third_party_invite"), dict)
            and "signed" in content["third_party_invite"]
        ):
            new_content["third_party_invite"] = {"signed": content["third_party_invite"]["signed"]}
    redacted["content"] = new_content
    return redacted
