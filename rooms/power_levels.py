"""Power levels as the auth rules see them, with the spec's defaults filled in."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rooms.versions import RoomVersion

JsonDict = dict[str, Any]
StateMap = dict[tuple[str, str], JsonDict]

INFINITE = math.inf


def parse_level(value: Any, version: RoomVersion) -> int | None:
    """An integer power level; room versions before 10 also accept numeric strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not version.enforce_int_power_levels and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def creators(create_event: JsonDict | None, version: RoomVersion) -> set[str]:
    """Who created the room: the create event's sender (or ``content.creator`` before v11),
    plus, from v12, any ``additional_creators``."""
    if create_event is None:
        return set()
    content = create_event.get("content") or {}
    if version.implicit_room_creator:
        result = {create_event.get("sender", "")}
    else:
        result = {content.get("creator", create_event.get("sender", ""))}
    if version.creators_infinite_power:
        extra = content.get("additional_creators")
        if isinstance(extra, list):
            result.update(u for u in extra if isinstance(u, str))
    return result


@dataclass(frozen=True)
class PowerLevels:
    users: dict[str, int] = field(default_factory=dict)
    users_default: int = 0
    events: dict[str, int] = field(default_factory=dict)
    events_default: int = 0
    state_default: int = 0
    ban: int = 50
    kick: int = 50
    redact: int = 50
    invite: int = 0
    notifications: dict[str, int] = field(default_factory=dict)
    room_creators: frozenset[str] = frozenset()
    creators_infinite: bool = False

    def user_level(self, user_id: str) -> float:
        if self.creators_infinite and user_id in self.room_creators:
            return INFINITE
        return self.users.get(user_id, self.users_default)

    def event_level(self, event_type: str, is_state: bool) -> int:
        if event_type in self.events:
            return self.events[event_type]
        return self.state_default if is_state else self.events_default

    def notification_level(self, key: str) -> int:
        return self.notifications.get(key, 50)


def _level_map(value: Any, version: RoomVersion) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    result = {}
    for key, raw in value.items():
        level = parse_level(raw, version)
        if level is not None:
            result[key] = level
    return result


def power_levels_from_state(state: StateMap, version: RoomVersion) -> PowerLevels:
    create = state.get(("m.room.create", ""))
    room_creators = frozenset(creators(create, version))
    event = state.get(("m.room.power_levels", ""))
    if event is None:
        # No power levels yet: the creator has 100 (or infinite power from v12).
        return PowerLevels(
            users={c: 100 for c in room_creators},
            state_default=0,
            room_creators=room_creators,
            creators_infinite=version.creators_infinite_power,
        )
    content = event.get("content") or {}

    def level(key: str, default: int) -> int:
        parsed = parse_level(content.get(key), version)
        return default if parsed is None else parsed

    return PowerLevels(
        users=_level_map(content.get("users"), version),
        users_default=level("users_default", 0),
        events=_level_map(content.get("events"), version),
        events_default=level("events_default", 0),
        state_default=level("state_default", 50),
        ban=level("ban", 50),
        kick=level("kick", 50),
        redact=level("redact", 50),
        invite=level("invite", 0),
        notifications=_level_map(content.get("notifications"), version),
        room_creators=room_creators,
        creators_infinite=version.creators_infinite_power,
    )


def default_power_levels_content(
    creator_ids: Iterable[str], version: RoomVersion, preset_invite_level: int = 0
) -> JsonDict:
    """The power levels a new room starts with (creators omitted from v12: they are infinite)."""
    users = {} if version.creators_infinite_power else {u: 100 for u in creator_ids}
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": preset_invite_level,
        "notifications": {"room": 50},
    }
