"""Push rules as the spec defines them: the server-default rules, validation of a user's
own rules, and evaluation of a rule set against an event. Pure, no I/O."""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

JsonDict = dict[str, Any]

KINDS = ("override", "content", "room", "sender", "underride")
CONDITION_KINDS = (
    "event_match", "event_property_is", "event_property_contains", "contains_display_name",
    "room_member_count", "sender_notification_permission",
)  # fmt: skip
_LEGACY_ACTIONS = ("dont_notify", "coalesce")
_IS_RE = re.compile(r"^(==|<=|>=|<|>)?([0-9]+)$")


class InvalidRule(ValueError):
    """A user-supplied rule the server refuses (the message names what is wrong)."""


def _tweak(name: str, value: Any = None) -> JsonDict:
    return {"set_tweak": name} if value is None else {"set_tweak": name, "value": value}


def _rule(
    rule_id: str, conditions: list[JsonDict], actions: list[Any], enabled: bool = True
) -> JsonDict:
    return {"rule_id": rule_id, "default": True, "enabled": enabled,
            "conditions": conditions, "actions": actions}  # fmt: skip


def _match(key: str, pattern: str) -> JsonDict:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _predefined_rules(user_id: str) -> dict[str, list[JsonDict]]:
    """The spec's predefined rules for ``user_id`` (Matrix 1.17+: mentions via m.mentions)."""
    sound = _tweak("sound", "default")
    return {
        "override": [
            _rule(".m.rule.master", [], [], enabled=False),
            _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
            _rule(
                ".m.rule.invite_for_me",
                [
                    _match("type", "m.room.member"),
                    _match("content.membership", "invite"),
                    _match("state_key", user_id),
                ],
                ["notify", sound],
            ),
            _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
            _rule(
                ".m.rule.is_user_mention",
                [
                    {
                        "kind": "event_property_contains",
                        "key": "content.m\\.mentions.user_ids",
                        "value": user_id,
                    }
                ],
                ["notify", sound, _tweak("highlight")],
            ),
            _rule(
                ".m.rule.is_room_mention",
                [
                    {
                        "kind": "event_property_is",
                        "key": "content.m\\.mentions.room",
                        "value": True,
                    },
                    {"kind": "sender_notification_permission", "key": "room"},
                ],
                ["notify", _tweak("highlight")],
            ),
            _rule(
                ".m.rule.tombstone",
                [_match("type", "m.room.tombstone"), _match("state_key", "")],
                ["notify", _tweak("highlight")],
            ),
            _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
            _rule(
                ".m.rule.room.server_acl",
                [_match("type", "m.room.server_acl"), _match("state_key", "")],
                [],
            ),
            _rule(
                ".m.rule.suppress_edits",
                [
                    {
                        "kind": "event_property_is",
                        "key": "content.m\\.relates_to.rel_type",
                        "value": "m.replace",
                    }
                ],
                [],
            ),
        ],
        "content": [],
        "room": [],
        "sender": [],
        "underride": [
            _rule(
                ".m.rule.call",
                [_match("type", "m.call.invite")],
                ["notify", _tweak("sound", "ring")],
            ),
            _rule(
                ".m.rule.encrypted_room_one_to_one",
                [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
                ["notify", sound],
            ),
            _rule(
                ".m.rule.room_one_to_one",
                [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
                ["notify", sound],
            ),
            _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
            _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
        ],
    }


# Every user's defaults are built from one template: the rules that do not name their owner
# (all but two) are the same objects for every user, and so is their compiled form. Per
# user they cost 16 KiB when built afresh, and the push caches hold one set per member of
# every room an event is evaluated in. Shared rules are read-only: a change makes a new dict.
_OWNER = "\x00owner\x00"


@lru_cache(maxsize=1)
def _template() -> dict[str, list[tuple[JsonDict, bool]]]:
    """Each predefined rule, and whether it names its owner."""
    return {
        kind: [(rule, _for_owner(rule, "") != rule) for rule in rules]
        for kind, rules in _predefined_rules(_OWNER).items()
    }


def _for_owner(value: Any, user_id: str) -> Any:
    if value == _OWNER:
        return user_id
    if isinstance(value, dict):
        return {k: _for_owner(v, user_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_for_owner(v, user_id) for v in value]
    return value


def default_rules(user_id: str) -> dict[str, list[JsonDict]]:
    """The predefined rules for ``user_id``: fresh lists; the rule dicts that do not name
    the user are shared with every other user's and must not be changed in place."""
    return {
        kind: [_for_owner(rule, user_id) if names_owner else rule for rule, names_owner in rules]
        for kind, rules in _template().items()
    }


# A user's stored rules: their own rules per kind (in priority order) and their changes to
# the server-default rules ({rule_id: {"enabled": bool, "actions": [...]}}).
def empty_user_rules() -> JsonDict:
    return {"rules": {kind: [] for kind in KINDS}, "defaults": {}}


def effective_rules(user_id: str, stored: JsonDict) -> dict[str, list[JsonDict]]:
    """The ruleset clients see: ``.m.rule.master`` first, user rules before server defaults."""
    defaults = default_rules(user_id)
    changes = stored.get("defaults", {})
    if changes:
        for rules in defaults.values():
            for index, rule in enumerate(rules):
                change = changes.get(rule["rule_id"])
                if change:
                    rules[index] = {**rule, **change}  # (a shared rule stays unchanged)
    own = stored.get("rules", {})
    result: dict[str, list[JsonDict]] = {}
    for kind in KINDS:
        user_rules = [dict(r, default=False) for r in own.get(kind, [])]
        server = defaults[kind]
        if kind == "override":
            master, rest = server[:1], server[1:]
            result[kind] = master + user_rules + rest
        else:
            result[kind] = user_rules + server
    return result


def validate_actions(actions: Any) -> list[Any]:
    if not isinstance(actions, list):
        raise InvalidRule("actions must be a list")
    cleaned = []
    for action in actions:
        if action in _LEGACY_ACTIONS:
            continue
        if action == "notify" or (
            isinstance(action, dict) and isinstance(action.get("set_tweak"), str)
        ):
            cleaned.append(action)
        else:
            raise InvalidRule(f"unknown action {action!r}")
    return cleaned


def validate_rule(kind: str, rule_id: str, body: JsonDict) -> JsonDict:
    """A user rule from a PUT body, or InvalidRule saying what is wrong."""
    if kind not in KINDS:
        raise InvalidRule(f"unknown rule kind {kind!r}")
    if rule_id.startswith("."):
        raise InvalidRule("rule IDs starting with '.' are reserved for server-default rules")
    if not rule_id or "/" in rule_id or "\\" in rule_id:
        raise InvalidRule("invalid rule ID")
    rule: JsonDict = {"rule_id": rule_id, "enabled": True,
                      "actions": validate_actions(body.get("actions"))}  # fmt: skip
    if kind == "content":
        pattern = body.get("pattern")
        if not isinstance(pattern, str):
            raise InvalidRule("content rules need a string pattern")
        rule["pattern"] = pattern
    elif kind in ("override", "underride"):
        conditions = body.get("conditions", [])
        if not isinstance(conditions, list):
            raise InvalidRule("conditions must be a list")
        for condition in conditions:
            _validate_condition(condition)
        rule["conditions"] = copy.deepcopy(conditions)
    elif kind == "room" and not rule_id.startswith("!"):
        raise InvalidRule("room rule IDs must be room IDs")
    elif kind == "sender" and not rule_id.startswith("@"):
        raise InvalidRule("sender rule IDs must be user IDs")
    return rule


def _validate_condition(condition: Any) -> None:
    if not isinstance(condition, dict) or condition.get("kind") not in CONDITION_KINDS:
        raise InvalidRule(f"unknown condition {condition!r}")
    kind = condition["kind"]
    if kind == "event_match" and not (
        isinstance(condition.get("key"), str) and isinstance(condition.get("pattern"), str)
    ):
        raise InvalidRule("event_match needs a string key and pattern")
    if kind in ("event_property_is", "event_property_contains") and not isinstance(
        condition.get("key"), str
    ):
        raise InvalidRule(f"{kind} needs a string key")
    if kind == "room_member_count" and not (
        isinstance(condition.get("is"), str) and _IS_RE.match(condition["is"])
    ):
        raise InvalidRule("room_member_count needs an 'is' like '2', '>=10' or '<5'")
    if kind == "sender_notification_permission" and not isinstance(condition.get("key"), str):
        raise InvalidRule("sender_notification_permission needs a string key")


# Evaluation


@dataclass(frozen=True)
class PushContext:
    user_id: str
    display_name: str | None
    member_count: int
    sender_power: float
    notification_levels: dict[str, int]


@lru_cache(maxsize=1024)
def _glob(pattern: str, word_boundary: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    if word_boundary:
        return re.compile(rf"(?:^|[^A-Za-z0-9_]){body}(?:[^A-Za-z0-9_]|$)", re.I | re.S)
    return re.compile(rf"^{body}$", re.I | re.S)


@lru_cache(maxsize=1024)
def _split_path(key: str) -> tuple[str, ...]:
    """Dot-separated property paths, where only ``\\.`` and ``\\\\`` are escapes."""
    parts, current, index = [], "", 0
    while index < len(key):
        char = key[index]
        if char == "\\" and index + 1 < len(key) and key[index + 1] in ".\\":
            current += key[index + 1]
            index += 2
            continue
        if char == ".":
            parts.append(current)
            current = ""
        else:
            current += char
        index += 1
    parts.append(current)
    return tuple(parts)


_MISSING = object()


def _lookup(event: JsonDict, key: str) -> Any:
    value: Any = event
    for part in _split_path(key):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _simple(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | str)


def _condition_holds(condition: JsonDict, event: JsonDict, ctx: PushContext) -> bool:
    kind = condition.get("kind")
    if kind == "event_match":
        value = _lookup(event, str(condition.get("key")))
        if not isinstance(value, str):
            return False
        word_boundary = condition.get("key") == "content.body"
        return bool(_glob(str(condition.get("pattern")), word_boundary).search(value))
    if kind == "event_property_is":
        value = _lookup(event, str(condition.get("key")))
        expected = condition.get("value")
        return _simple(value) and type(value) is type(expected) and value == expected
    if kind == "event_property_contains":
        value = _lookup(event, str(condition.get("key")))
        expected = condition.get("value")
        return isinstance(value, list) and any(
            _simple(v) and type(v) is type(expected) and v == expected for v in value
        )
    if kind == "contains_display_name":
        body = _lookup(event, "content.body")
        if not ctx.display_name or not isinstance(body, str):
            return False
        return bool(_glob(re.sub(r"[*?]", "", ctx.display_name), True).search(body))
    if kind == "room_member_count":
        match = _IS_RE.match(str(condition.get("is", "")))
        if not match:
            return False
        op, number = match.group(1) or "==", int(match.group(2))
        count = ctx.member_count
        return {"==": count == number, "<": count < number, ">": count > number,
                "<=": count <= number, ">=": count >= number}[op]  # fmt: skip
    if kind == "sender_notification_permission":
        needed = ctx.notification_levels.get(str(condition.get("key")), 50)
        return ctx.sender_power >= needed
    return False  # unrecognised conditions never match


def _rule_matches(kind: str, rule: JsonDict, event: JsonDict, ctx: PushContext) -> bool:
    if not rule.get("enabled", True):
        return False
    if kind == "content":
        body = _lookup(event, "content.body")
        return isinstance(body, str) and bool(
            _glob(str(rule.get("pattern", "")), True).search(body)
        )
    if kind == "room":
        return bool(event.get("room_id") == rule["rule_id"])
    if kind == "sender":
        return bool(event.get("sender") == rule["rule_id"])
    return all(_condition_holds(c, event, ctx) for c in rule.get("conditions", []))


def evaluate(rules: dict[str, list[JsonDict]], event: JsonDict, ctx: PushContext) -> list[Any]:
    """The actions of the first matching rule, or [] (no notification)."""
    return EventEvaluation(event).first_match(CompiledRules(rules, ctx.user_id), ctx)[0]


# (kind, what it matches on as JSON, whether it looks at display names, the rule, its
# actions, the actions as JSON)
_Entry = tuple[str, str, bool, JsonDict, list[Any], str]


def _compile(kind: str, rule: JsonDict) -> _Entry | None:
    """A rule ready for evaluation; None when it is disabled."""
    if not rule.get("enabled", True):
        return None
    key = json.dumps(
        [kind, rule.get("rule_id"), rule.get("pattern"), rule.get("conditions")], sort_keys=True
    )
    by_name = any(
        isinstance(c, dict) and c.get("kind") == "contains_display_name"
        for c in rule.get("conditions", [])
    )
    actions = [a for a in rule.get("actions", []) if a not in _LEGACY_ACTIONS]
    return (kind, key, by_name, rule, actions, json.dumps(actions))


@lru_cache(maxsize=1)
def _shared_entries() -> dict[int, _Entry | None]:
    """The compiled form of each shared predefined rule, by the rule's identity (the
    template lives as long as the process, so no other object can take its ID)."""
    return {
        id(rule): _compile(kind, rule)
        for kind, rules in _template().items()
        for rule, names_owner in rules
        if not names_owner
    }


class CompiledRules:
    """A user's rule set prepared for evaluating many events: each enabled rule with a key
    naming what it matches on (kind, ID, pattern, conditions; never its actions), and its
    actions ready to store.

    ``shape`` is the whole rule set (actions included) with the user's own ID written as a
    placeholder: members with the same shape differ only in rules that name themselves, and
    those can only match an event that contains their ID."""

    __slots__ = ("entries", "shape", "uses_display_name")

    def __init__(self, rules: dict[str, list[JsonDict]], user_id: str | None = None) -> None:
        self.entries: list[_Entry] = []
        shared = _shared_entries()
        for kind in KINDS:
            for rule in rules.get(kind, []):
                entry = shared[id(rule)] if id(rule) in shared else _compile(kind, rule)
                if entry is not None:
                    self.entries.append(entry)
        self.uses_display_name = any(by_name for _, _, by_name, _, _, _ in self.entries)
        self.shape: str | None = None
        # Glob characters in an ID could match text other than the ID itself; a non-ASCII
        # one is escaped in the keys and may fold case differently: neither is shared.
        if user_id and user_id.isascii() and not any(c in user_id for c in '*?"\\'):
            self.shape = sys.intern(
                "\n".join(
                    key.replace(user_id, _OWNER) + actions_json
                    for _, key, _, _, _, actions_json in self.entries
                )
            )


class EventEvaluation:
    """One event evaluated for many members. Most members share most rules (the server
    defaults differ between users only in their own ID), so each distinct rule is matched
    against the event once, and members whose rule sets have the same shape and who are
    not named in the event share one answer: the cost of an event grows with the number of
    distinct rule sets among its members, not with the members.

    Every member's context must differ only in ``user_id`` and ``display_name``: the member
    count, sender power and notification levels belong to the event."""

    __slots__ = ("_event", "_memo", "_shared", "_text")

    def __init__(self, event: JsonDict) -> None:
        self._event = event
        self._memo: dict[Any, bool] = {}
        self._shared: dict[str, tuple[list[Any], str]] = {}
        self._text = json.dumps(event, ensure_ascii=False).lower()

    def first_match(self, rules: CompiledRules, ctx: PushContext) -> tuple[list[Any], str]:
        """The actions of the first matching rule (and as JSON), or ([], "[]")."""
        shape = rules.shape
        if shape is None or rules.uses_display_name or ctx.user_id.lower() in self._text:
            return self._walk(rules, ctx)
        answer = self._shared.get(shape)
        if answer is None:
            answer = self._shared[shape] = self._walk(rules, ctx)
        return answer

    def named(self, user_ids: list[str]) -> set[str]:
        """The users whose ID (ignoring case) occurs in the event. Every occurrence starts
        at an "@", and an event holds few: the cost follows the "@"s and the distinct ID
        lengths, not the number of members asked about."""
        by_lower: dict[str, list[str]] = {}
        for user_id in user_ids:
            by_lower.setdefault(user_id.lower(), []).append(user_id)
        lengths = {len(lower) for lower in by_lower}
        text = self._text
        found: set[str] = set()
        at = text.find("@")
        while at != -1:
            for length in lengths:
                same = by_lower.get(text[at : at + length])
                if same is not None:
                    found.update(same)
            at = text.find("@", at + 1)
        return found

    def shared_answer(self, rules: CompiledRules, is_named: bool) -> tuple[list[Any], str] | None:
        """The answer already worked out for a member of the same shape, when it is this
        member's too (``is_named``: the member's ID is in the event); None when
        ``first_match`` must be asked (with the full context)."""
        shape = rules.shape
        if shape is None or is_named or rules.uses_display_name:
            return None
        return self._shared.get(shape)

    def _walk(self, rules: CompiledRules, ctx: PushContext) -> tuple[list[Any], str]:
        memo = self._memo
        for kind, key, by_name, rule, actions, actions_json in rules.entries:
            memo_key: Any = (key, ctx.display_name) if by_name else key
            matched = memo.get(memo_key)
            if matched is None:
                matched = _rule_matches(kind, rule, self._event, ctx)
                memo[memo_key] = matched
            if matched:
                return actions, actions_json
        return [], "[]"


def notifies(actions: list[Any]) -> bool:
    return "notify" in actions


def highlights(actions: list[Any]) -> bool:
    for action in actions:
        if isinstance(action, dict) and action.get("set_tweak") == "highlight":
            return action.get("value", True) is not False
    return False
