"""Sync filters: validated once, with errors that name the offending field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from homeserver.errors import Codes, MatrixError

JsonDict = dict[str, Any]


def _bad(path: str, expected: str) -> MatrixError:
    return MatrixError(400, Codes.BAD_JSON, f"Invalid filter: {path} must be {expected}")


def _strings(raw: JsonDict, key: str, path: str) -> list[str] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"{path}.{key}", "a list of strings")
    return value


def _bool(raw: JsonDict, key: str, path: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise _bad(f"{path}.{key}", "a boolean")
    return value


def _object(raw: JsonDict, key: str, path: str) -> JsonDict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise _bad(f"{path}.{key}", "an object")
    return value


def _matches(patterns: list[str], value: str) -> bool:
    return any(p == value or (p.endswith("*") and value.startswith(p[:-1])) for p in patterns)


@dataclass
class EventFilterSpec:
    limit: int | None = None
    types: list[str] | None = None
    not_types: list[str] = field(default_factory=list)
    senders: list[str] | None = None
    not_senders: list[str] = field(default_factory=list)
    rooms: list[str] | None = None
    not_rooms: list[str] = field(default_factory=list)
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    @classmethod
    def parse(cls, raw: Any, path: str) -> EventFilterSpec:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise _bad(path, "an object")
        limit = raw.get("limit")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise _bad(f"{path}.limit", "a non-negative integer")
        return cls(
            limit=limit,
            types=_strings(raw, "types", path),
            not_types=_strings(raw, "not_types", path) or [],
            senders=_strings(raw, "senders", path),
            not_senders=_strings(raw, "not_senders", path) or [],
            rooms=_strings(raw, "rooms", path),
            not_rooms=_strings(raw, "not_rooms", path) or [],
            lazy_load_members=_bool(raw, "lazy_load_members", path, False),
            include_redundant_members=_bool(raw, "include_redundant_members", path, False),
            unread_thread_notifications=_bool(raw, "unread_thread_notifications", path, False),
        )

    def allows(self, event: JsonDict) -> bool:
        event_type = str(event.get("type", ""))
        sender = str(event.get("sender", ""))
        if _matches(self.not_types, event_type) or sender in self.not_senders:
            return False
        if self.types is not None and not _matches(self.types, event_type):
            return False
        return self.senders is None or sender in self.senders

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@dataclass
class SyncFilter:
    timeline: EventFilterSpec
    state: EventFilterSpec
    ephemeral: EventFilterSpec
    room_account_data: EventFilterSpec
    account_data: EventFilterSpec
    presence: EventFilterSpec
    rooms: list[str] | None
    not_rooms: list[str]
    include_leave: bool

    @classmethod
    def parse(cls, raw: Any) -> SyncFilter:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise _bad("filter", "an object")
        for key in ("event_fields",):
            _strings(raw, key, "filter")
        event_format = raw.get("event_format", "client")
        if event_format not in ("client", "federation"):
            raise _bad("filter.event_format", "'client' or 'federation'")
        room = _object(raw, "room", "filter")
        return cls(
            timeline=EventFilterSpec.parse(room.get("timeline"), "filter.room.timeline"),
            state=EventFilterSpec.parse(room.get("state"), "filter.room.state"),
            ephemeral=EventFilterSpec.parse(room.get("ephemeral"), "filter.room.ephemeral"),
            room_account_data=EventFilterSpec.parse(
                room.get("account_data"), "filter.room.account_data"
            ),
            account_data=EventFilterSpec.parse(raw.get("account_data"), "filter.account_data"),
            presence=EventFilterSpec.parse(raw.get("presence"), "filter.presence"),
            rooms=_strings(room, "rooms", "filter.room"),
            not_rooms=_strings(room, "not_rooms", "filter.room") or [],
            include_leave=_bool(room, "include_leave", "filter.room", False),
        )

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms
