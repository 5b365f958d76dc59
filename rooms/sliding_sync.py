"""Simplified sliding sync (MSC4186): the request's shape and its room configs, as plain
data with no I/O. Both request dialects are read: the one clients send today on the
unstable path (``ranges``, ``required_state`` as ``[type, state_key]`` pairs with ``*``,
``$LAZY`` and ``$ME``, ``is_invite``) and the MSC's final one (``range``,
``required_state`` as ``{include, exclude, lazy_members}``, ``is_invited``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Events that move a room up the list (the MSC's "proper activity").
BUMP_TYPES = frozenset({
    "m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite",
    "m.poll.start", "m.beacon_info",
})  # fmt: skip
MAX_LISTS = 100
MAX_ROOM_SUBSCRIPTIONS = 1000  # clients subscribe to the rooms on screen: a handful
MAX_TIMELINE_LIMIT = 1000
MAX_REQUIRED_STATE = 1000
WILDCARD = "*"
LAZY = "$LAZY"
ME = "$ME"

# (type or None for any, state_key or None for any); "$ME" stays as written until matched.
StatePattern = tuple[str | None, str | None]


class RequestError(ValueError):
    """A request that does not follow the MSC; the message says what is wrong."""


@dataclass(frozen=True)
class RequiredState:
    include: frozenset[StatePattern] = frozenset()
    exclude: frozenset[StatePattern] = frozenset()
    lazy_members: bool = False

    def matches(self, event_type: str, state_key: str, user_id: str) -> bool:
        def hit(patterns: Iterable[StatePattern]) -> bool:
            for want_type, want_key in patterns:
                if want_type is not None and want_type != event_type:
                    continue
                if want_key is None or want_key == state_key:
                    return True
                if want_key == ME and state_key == user_id:
                    return True
            return False

        return hit(self.include) and not hit(self.exclude)

    def wants_all_members(self) -> bool:
        return any(t in (None, "m.room.member") and k is None for t, k in self.include)

    def named_members(self, user_id: str) -> set[str]:
        """The members the config names by state key ($ME as the user)."""
        return {
            user_id if k == ME else k
            for t, k in self.include
            if t in (None, "m.room.member") and k is not None
        }

    def union(self, other: RequiredState) -> RequiredState:
        """Everything either would return. An exclusion survives only where both exclude."""
        if not self.include and not self.lazy_members:
            return other
        if not other.include and not other.lazy_members:
            return self
        return RequiredState(
            self.include | other.include,
            self.exclude & other.exclude,
            self.lazy_members or other.lazy_members,
        )

    def signature(self) -> str:
        """A stable text of the config, stored to notice when a client changes it."""

        def listed(patterns: frozenset[StatePattern]) -> list[list[str | None]]:
            return sorted(([t, k] for t, k in patterns), key=lambda p: json.dumps(p))

        return json.dumps(
            {"i": listed(self.include), "e": listed(self.exclude), "l": self.lazy_members},
            separators=(",", ":"),
        )

    @classmethod
    def from_signature(cls, text: str) -> RequiredState:
        try:
            data = json.loads(text)
            return cls(
                frozenset((t, k) for t, k in data["i"]),
                frozenset((t, k) for t, k in data["e"]),
                bool(data["l"]),
            )
        except (ValueError, KeyError, TypeError):
            return cls()

    def adds_to(self, old: RequiredState) -> bool:
        """Whether this config may return state the old one did not (a client widened it)."""
        return self != old and self.union(old) != old


@dataclass(frozen=True)
class RoomConfig:
    timeline_limit: int
    required_state: RequiredState

    def combine(self, other: RoomConfig) -> RoomConfig:
        return RoomConfig(
            max(self.timeline_limit, other.timeline_limit),
            self.required_state.union(other.required_state),
        )


@dataclass(frozen=True)
class ListFilters:
    """A list's filters; the default (every field unset) lets every room through."""

    is_dm: bool | None = None
    is_encrypted: bool | None = None
    is_invited: bool | None = None
    spaces: tuple[str, ...] | None = None
    room_types: tuple[str | None, ...] | None = None
    not_room_types: tuple[str | None, ...] = ()
    tags: tuple[str, ...] | None = None
    not_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListConfig:
    config: RoomConfig
    ranges: tuple[tuple[int, int], ...] | None  # None: the whole filtered list
    filters: ListFilters

    def in_range(self, index: int) -> bool:
        return self.ranges is None or any(lo <= index <= hi for lo, hi in self.ranges)

    def window(self, rooms: list[str]) -> list[str]:
        """The rooms of the filtered list that the ranges select, in list order."""
        if self.ranges is None:
            return list(rooms)
        picked = sorted(
            {i for lo, hi in self.ranges for i in range(lo, min(hi, len(rooms) - 1) + 1)}
        )
        return [rooms[i] for i in picked]


@dataclass(frozen=True)
class ExtensionScope:
    enabled: bool
    lists: tuple[str, ...] | None = None  # None: every list ("*")
    rooms: tuple[str, ...] | None = None  # None: every subscribed room ("*")
    since: str | None = None
    limit: int | None = None


@dataclass
class SlidingSyncRequest:
    conn_id: str = ""
    pos: str | None = None
    timeout_ms: int = 0
    set_presence: str = "online"
    lists: dict[str, ListConfig] = field(default_factory=dict)
    subscriptions: dict[str, RoomConfig] = field(default_factory=dict)
    extensions: dict[str, ExtensionScope] = field(default_factory=dict)


KNOWN_EXTENSIONS = ("to_device", "e2ee", "account_data", "receipts", "typing")


def parse_request(body: dict[str, Any], query_pos: str | None, query_timeout: int | None
                  ) -> SlidingSyncRequest:  # fmt: skip
    """The request, from its JSON body (and, for today's clients, the ``pos`` and
    ``timeout`` query parameters). Raises RequestError for anything malformed."""
    conn_id = _optional(body, "conn_id", str, "")
    pos = _optional(body, "pos", str, None) or query_pos
    timeout = _optional(body, "timeout", int, None)
    if timeout is None:
        timeout = query_timeout or 0
    if timeout < 0:
        raise RequestError("timeout must not be negative")
    presence = _optional(body, "set_presence", str, "online")
    if presence not in ("online", "offline", "unavailable"):
        raise RequestError("set_presence must be online, offline or unavailable")
    raw_lists = _optional(body, "lists", dict, {})
    if len(raw_lists) > MAX_LISTS:
        raise RequestError(f"At most {MAX_LISTS} lists")
    lists = {}
    for key, raw in raw_lists.items():
        if not isinstance(raw, dict):
            raise RequestError(f"List {key} must be an object")
        lists[key] = ListConfig(
            _room_config(raw, f"lists.{key}"), _ranges(raw, key), _filters(raw.get("filters"))
        )
    subscriptions = {}
    raw_subscriptions = _optional(body, "room_subscriptions", dict, {})
    if len(raw_subscriptions) > MAX_ROOM_SUBSCRIPTIONS:
        raise RequestError(f"At most {MAX_ROOM_SUBSCRIPTIONS} room subscriptions")
    for room_id, raw in raw_subscriptions.items():
        if not isinstance(raw, dict):
            raise RequestError(f"Subscription to {room_id} must be an object")
        subscriptions[room_id] = _room_config(raw, f"room_subscriptions.{room_id}")
    extensions = {}
    for name, raw in _optional(body, "extensions", dict, {}).items():
        if name in KNOWN_EXTENSIONS and isinstance(raw, dict):
            extensions[name] = _extension(raw, name)
    return SlidingSyncRequest(conn_id, pos, timeout, presence, lists, subscriptions, extensions)


def _optional(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RequestError(f"{key} must be of type {kind.__name__}")
    return value


def _room_config(raw: dict[str, Any], where: str) -> RoomConfig:
    limit = raw.get("timeline_limit", 0)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise RequestError(f"{where}.timeline_limit must be a non-negative integer")
    return RoomConfig(
        min(limit, MAX_TIMELINE_LIMIT), parse_required_state(raw.get("required_state"))
    )


def parse_required_state(raw: Any) -> RequiredState:
    if raw is None:
        return RequiredState()
    if isinstance(raw, list):
        return _legacy_required_state(raw)
    if not isinstance(raw, dict):
        raise RequestError("required_state must be a list or an object")
    lazy = raw.get("lazy_members", False)
    if not isinstance(lazy, bool):
        raise RequestError("required_state.lazy_members must be a boolean")
    return RequiredState(_elements(raw.get("include")), _elements(raw.get("exclude")), lazy)


def _elements(raw: Any) -> frozenset[StatePattern]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or len(raw) > MAX_REQUIRED_STATE:
        raise RequestError("required_state include and exclude must be lists")
    patterns = set()
    for element in raw:
        if not isinstance(element, dict):
            raise RequestError("required_state elements must be objects")
        event_type, state_key = element.get("type"), element.get("state_key")
        if not isinstance(event_type, str | None) or not isinstance(state_key, str | None):
            raise RequestError("required_state type and state_key must be strings")
        patterns.add((event_type, state_key))
    return frozenset(patterns)


def _legacy_required_state(raw: list[Any]) -> RequiredState:
    """``[[type, state_key], ...]`` with ``*`` for any, ``$LAZY`` members and ``$ME``."""
    if len(raw) > MAX_REQUIRED_STATE:
        raise RequestError("required_state is too long")
    include: set[StatePattern] = set()
    lazy = False
    for pair in raw:
        if (
            not isinstance(pair, list) or len(pair) != 2
            or not all(isinstance(p, str) for p in pair)
        ):  # fmt: skip
            raise RequestError("required_state entries must be [type, state_key] pairs")
        event_type, state_key = pair
        if event_type == "m.room.member" and state_key == LAZY:
            lazy = True
            continue
        include.add((
            None if event_type == WILDCARD else event_type,
            None if state_key == WILDCARD else state_key,
        ))  # fmt: skip
    return RequiredState(frozenset(include), frozenset(), lazy)


def _ranges(raw: dict[str, Any], key: str) -> tuple[tuple[int, int], ...] | None:
    if "range" in raw:
        found = [raw["range"]]
    elif "ranges" in raw:
        found = raw["ranges"]
        if not isinstance(found, list):
            raise RequestError(f"lists.{key}.ranges must be a list of [start, end] pairs")
    else:
        return None
    ranges = []
    for pair in found:
        if (
            not isinstance(pair, list) or len(pair) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in pair)
            or pair[0] > pair[1]
        ):  # fmt: skip
            raise RequestError(f"lists.{key} ranges must be [start, end] with 0 <= start <= end")
        ranges.append((pair[0], pair[1]))
    return tuple(ranges)


def _filters(raw: Any) -> ListFilters:
    if raw is None:
        return ListFilters()
    if not isinstance(raw, dict):
        raise RequestError("filters must be an object")

    def flag(*names: str) -> bool | None:
        for name in names:
            value = raw.get(name)
            if value is not None:
                if not isinstance(value, bool):
                    raise RequestError(f"filters.{name} must be a boolean")
                return value
        return None

    def strings(name: str, nullable: bool = False) -> tuple[Any, ...] | None:
        value = raw.get(name)
        if value is None:
            return None
        allowed = (str, type(None)) if nullable else (str,)
        if not isinstance(value, list) or not all(isinstance(v, allowed) for v in value):
            raise RequestError(f"filters.{name} must be a list of strings")
        return tuple(value)

    return ListFilters(
        is_dm=flag("is_dm"),
        is_encrypted=flag("is_encrypted"),
        is_invited=flag("is_invited", "is_invite"),
        spaces=strings("spaces"),
        room_types=strings("room_types", nullable=True),
        not_room_types=strings("not_room_types", nullable=True) or (),
        tags=strings("tags"),
        not_tags=strings("not_tags") or (),
    )


def _extension(raw: dict[str, Any], name: str) -> ExtensionScope:
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise RequestError(f"extensions.{name}.enabled must be a boolean")

    def scope(key: str) -> tuple[str, ...] | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RequestError(f"extensions.{name}.{key} must be a list of strings")
        return None if WILDCARD in value else tuple(value)

    since = raw.get("since")
    if since is not None and not isinstance(since, str):
        raise RequestError(f"extensions.{name}.since must be a string")
    limit = raw.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise RequestError(f"extensions.{name}.limit must be a positive integer")
    return ExtensionScope(enabled, scope("lists"), scope("rooms"), since, limit)


def room_passes(
    filters: ListFilters,
    membership: str,
    is_dm: bool,
    encrypted: bool,
    room_type: str | None,
    tags: set[str],
    in_spaces: bool,
) -> bool:
    """Whether a room belongs in a list with these filters."""
    if filters.is_dm is not None and is_dm != filters.is_dm:
        return False
    if filters.is_encrypted is not None and encrypted != filters.is_encrypted:
        return False
    if filters.is_invited is not None and (membership == "invite") != filters.is_invited:
        return False
    if filters.spaces is not None and not in_spaces:
        return False
    if room_type in filters.not_room_types:
        return False
    if filters.room_types is not None and room_type not in filters.room_types:
        return False
    if tags & set(filters.not_tags):
        return False
    return filters.tags is None or bool(tags & set(filters.tags))
