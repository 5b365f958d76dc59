"""Push rules without a server: glob and property matching, every condition kind, rule
priority across kinds, the server-default rules, validation of a user's own rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rooms import push_rules
from rooms.push_rules import (
    InvalidRule,
    PushContext,
    default_rules,
    effective_rules,
    empty_user_rules,
    evaluate,
    highlights,
    notifies,
    validate_actions,
    validate_rule,
)

ME = "@me:example.org"
OTHER = "@other:example.org"
ROOM = "!room:example.org"
HIGHLIGHT = {"set_tweak": "highlight"}
SOUND = {"set_tweak": "sound", "value": "default"}


def ctx(
    member_count: int = 3,
    sender_power: float = 0,
    display_name: str | None = "Me Myself",
    notification_levels: dict[str, int] | None = None,
) -> PushContext:
    return PushContext(ME, display_name, member_count, sender_power, notification_levels or {})


def message(body: Any = "hello", sender: str = OTHER, **content: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "room_id": ROOM,
        "sender": sender,
        "event_id": "$e",
        "content": {"msgtype": "m.text", "body": body, **content},
    }


def holds(condition: dict[str, Any], event: dict[str, Any], context: PushContext | None = None):
    """Whether one override rule with this single condition matches the event."""
    rules = {
        "override": [
            {"rule_id": "x", "enabled": True, "conditions": [condition], "actions": ["notify"]}
        ]
    }
    return evaluate(rules, event, context or ctx()) == ["notify"]


def match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def stored(**rules: list[dict[str, Any]]) -> dict[str, Any]:
    result = empty_user_rules()
    for kind, values in rules.items():
        result["rules"][kind] = values
    return result


def user_rule(rule_id: str, actions: list[Any], **extra: Any) -> dict[str, Any]:
    return {"rule_id": rule_id, "enabled": True, "actions": actions, **extra}


def actions_for(event: dict[str, Any], user_rules: dict[str, Any] | None = None, **kw: Any):
    return evaluate(effective_rules(ME, user_rules or empty_user_rules()), event, ctx(**kw))


# Glob matching (event_match)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("Lunch plans", True),
        ("LUNCH", True),  # case-insensitive; * matches zero characters
        ("lunch", True),
        (" lunch", False),  # whole value: a leading space does not match
        ("lunc", False),  # ? needs exactly one character
        ("xlunch", False),
    ],
)
def test_event_match_whole_value_glob(topic: str, expected: bool) -> None:
    event = {"type": "m.room.topic", "state_key": "", "content": {"topic": topic}}
    assert holds(match("content.topic", "lunc?*"), event) is expected


def test_event_match_needs_a_string_value() -> None:
    for value in (None, 5, True, ["lunch"], {"a": "lunch"}):
        event = {"type": "m.room.topic", "content": {"topic": value}}
        assert not holds(match("content.topic", "*"), event), value
    assert not holds(match("content.topic", "*"), {"type": "m.room.topic", "content": {}})
    assert holds(match("content.topic", "*"), {"type": "m.room.topic", "content": {"topic": ""}})


def test_event_match_non_body_key_is_not_a_substring_search() -> None:
    event = {"type": "m.room.topic", "content": {"topic": "lunch plans"}}
    assert not holds(match("content.topic", "lunch"), event)
    assert not holds(match("content.topic", "plans"), event)
    assert holds(match("content.topic", "lunch plans"), event)
    assert holds(match("content.topic", "*plans"), event)


def test_glob_characters_other_than_star_and_question_mark_are_literal() -> None:
    event = {"type": "a.b", "content": {}}
    assert holds(match("type", "a.b"), event)
    assert not holds(match("type", "a.b"), {"type": "axb", "content": {}})
    assert not holds(match("type", "[ab]"), {"type": "a", "content": {}})
    assert holds(match("type", "[ab]"), {"type": "[AB]", "content": {}})
    assert holds(match("type", "a+"), {"type": "a+", "content": {}})
    assert not holds(match("type", "a+"), {"type": "aa", "content": {}})
    assert holds(match("type", "m.room.*"), {"type": "m.room.message", "content": {}})
    assert holds(match("type", "m.?oom.message"), {"type": "m.room.message", "content": {}})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("An example event.", True),
        ("exple", True),  # the pattern can match at the start and end of the body
        ("An exciting triple-whammy", True),  # spans words; '-' separates words
        ("EXAMPLE", True),
        ("examples", False),  # ends inside a word
        ("counterexample", False),  # starts inside a word
        ("an_example", False),  # '_' is a word character
        ("(example)", True),
    ],
)
def test_event_match_body_word_boundaries(body: str, expected: bool) -> None:
    assert holds(match("content.body", "ex*ple"), message(body)) is expected


def test_content_rule_uses_word_boundaries() -> None:
    rules = stored(content=[user_rule("cake", ["notify", HIGHLIGHT], pattern="cake")])
    assert highlights(actions_for(message("I want Cake!"), rules))
    assert highlights(actions_for(message("cake"), rules))
    assert not highlights(actions_for(message("cheesecake"), rules))
    assert not highlights(actions_for(message("cakes"), rules))
    assert not highlights(actions_for(message("cake_1"), rules))
    # No body, or not a string: the content rule cannot match.
    event = message()
    del event["content"]["body"]
    assert not highlights(actions_for(event, rules))
    assert not highlights(actions_for(message(["cake"]), rules))


# event_property_is / event_property_contains


def create_event(federate: Any) -> dict[str, Any]:
    return {"type": "m.room.create", "state_key": "", "content": {"m.federate": federate}}


def test_event_property_is_exact_typed_match() -> None:
    condition = {"kind": "event_property_is", "key": "content.m\\.federate", "value": True}
    assert holds(condition, create_event(True))
    assert not holds(condition, create_event("true"))
    assert not holds(condition, create_event(1))
    assert not holds(condition, create_event(False))
    assert not holds(condition, {"type": "m.room.create", "content": {}})
    one = {"kind": "event_property_is", "key": "content.m\\.federate", "value": 1}
    assert holds(one, create_event(1))
    assert not holds(one, create_event(True))
    assert not holds(one, create_event("1"))
    text = {"kind": "event_property_is", "key": "content.m\\.federate", "value": "true"}
    assert holds(text, create_event("true"))
    assert not holds(text, create_event("TRUE"))  # exact, not case-insensitive
    assert not holds(text, create_event(True))


def test_event_property_is_null_and_compound_values() -> None:
    null = {"kind": "event_property_is", "key": "content.x", "value": None}
    assert holds(null, {"type": "t", "content": {"x": None}})
    assert not holds(null, {"type": "t", "content": {}})  # absent is not null
    listed = {"kind": "event_property_is", "key": "content.x", "value": [1]}
    assert not holds(listed, {"type": "t", "content": {"x": [1]}})
    obj = {"kind": "event_property_is", "key": "content.x", "value": {"a": 1}}
    assert not holds(obj, {"type": "t", "content": {"x": {"a": 1}}})


def test_event_property_contains() -> None:
    condition = {
        "kind": "event_property_contains",
        "key": "content.alt_aliases",
        "value": "#myroom:example.com",
    }

    def aliases(value: Any) -> dict[str, Any]:
        return {"type": "m.room.canonical_alias", "content": {"alt_aliases": value}}

    assert holds(condition, aliases(["#somewhere:example.org", "#myroom:example.com"]))
    assert not holds(condition, aliases([":example.com"]))  # partial values do not match
    assert not holds(condition, aliases(["#MYROOM:example.com"]))
    assert not holds(condition, aliases("#myroom:example.com"))  # not an array
    assert not holds(condition, {"type": "m.room.canonical_alias", "content": {}})
    # Compound array values are ignored; types are not cast.
    assert holds(condition, aliases([["#myroom:example.com"], "#myroom:example.com"]))
    assert not holds(condition, aliases([["#myroom:example.com"]]))
    number = {"kind": "event_property_contains", "key": "content.n", "value": 1}
    assert holds(number, {"type": "t", "content": {"n": [0, 1]}})
    assert not holds(number, {"type": "t", "content": {"n": [True, "1"]}})


def test_dotted_paths_with_escaped_dots() -> None:
    condition = {
        "kind": "event_property_contains",
        "key": "content.m\\.mentions.user_ids",
        "value": ME,
    }
    assert holds(condition, message(**{"m.mentions": {"user_ids": [ME]}}))
    # Without the escape the path would mean content -> m -> mentions.
    assert not holds(condition, message(m={"mentions": {"user_ids": [ME]}}))
    unescaped = {
        "kind": "event_property_contains",
        "key": "content.m.mentions.user_ids",
        "value": ME,
    }
    assert holds(unescaped, message(m={"mentions": {"user_ids": [ME]}}))
    assert not holds(unescaped, message(**{"m.mentions": {"user_ids": [ME]}}))
    # Nested top-level keys work too.
    assert holds(match("content.a.b", "x"), {"type": "t", "content": {"a": {"b": "x"}}})
    assert not holds(match("content.a.b", "x"), {"type": "t", "content": {"a": "x"}})


def test_dotted_paths_escaped_backslash() -> None:
    # A property named m\foo is written content.m\\foo.
    condition = {"kind": "event_property_is", "key": "content.m\\\\foo", "value": "yes"}
    assert holds(condition, {"type": "t", "content": {"m\\foo": "yes"}})
    assert not holds(condition, {"type": "t", "content": {"mfoo": "yes"}})


def test_dotted_paths_other_escapes_are_left_as_is() -> None:
    # Appendix: "\x" is a literal backslash followed by 'x' (not 'x' alone).
    condition = {"kind": "event_property_is", "key": "content.m\\x", "value": "yes"}
    assert holds(condition, {"type": "t", "content": {"m\\x": "yes"}})
    assert not holds(condition, {"type": "t", "content": {"mx": "yes"}})


# room_member_count, sender_notification_permission, contains_display_name, unknown


@pytest.mark.parametrize(
    ("spec", "count", "expected"),
    [
        ("2", 2, True),
        ("2", 3, False),
        ("==2", 2, True),
        ("==2", 1, False),
        ("<3", 2, True),
        ("<3", 3, False),
        (">3", 4, True),
        (">3", 3, False),
        (">=3", 3, True),
        (">=3", 2, False),
        ("<=10", 10, True),
        ("<=10", 11, False),
        ("abc", 2, False),
        ("=2", 2, False),
        ("", 2, False),
    ],
)
def test_room_member_count(spec: str, count: int, expected: bool) -> None:
    condition = {"kind": "room_member_count", "is": spec}
    assert holds(condition, message(), ctx(member_count=count)) is expected


def test_sender_notification_permission() -> None:
    condition = {"kind": "sender_notification_permission", "key": "room"}
    levels = {"room": 50}
    assert holds(condition, message(), ctx(sender_power=50, notification_levels=levels))
    assert holds(condition, message(), ctx(sender_power=100, notification_levels=levels))
    assert not holds(condition, message(), ctx(sender_power=49, notification_levels=levels))
    # The room's own level for the key is used, defaulting to 50.
    assert holds(condition, message(), ctx(sender_power=10, notification_levels={"room": 10}))
    assert not holds(condition, message(), ctx(sender_power=10, notification_levels={}))
    assert holds(condition, message(), ctx(sender_power=50, notification_levels={}))


def test_contains_display_name() -> None:
    condition = {"kind": "contains_display_name"}
    assert holds(condition, message("hi me myself, lunch?"))
    assert not holds(condition, message("hi me myselfish"))
    assert not holds(condition, message("hi"), ctx(display_name=None))
    assert not holds(condition, message("hi"), ctx(display_name=""))


def test_unknown_condition_never_matches() -> None:
    assert not holds({"kind": "com.example.unknown"}, message())
    assert not holds({"kind": "com.example.unknown", "key": "type", "pattern": "*"}, message())
    assert not holds({}, message())
    # An override rule with an unknown condition is skipped: the message falls through to
    # .m.rule.message (notify, no highlight).
    rules = effective_rules(ME, empty_user_rules())
    rules["override"].insert(
        1, user_rule("weird", ["notify", HIGHLIGHT], conditions=[{"kind": "com.example.unknown"}])
    )
    assert evaluate(rules, message(), ctx()) == ["notify"]


def test_rule_without_conditions_always_matches() -> None:
    rules = stored(override=[user_rule("all", ["notify", HIGHLIGHT], conditions=[])])
    assert highlights(actions_for({"type": "com.example.anything", "content": {}}, rules))


# Priority


def test_effective_rules_order() -> None:
    rules = stored(
        override=[user_rule("o1", ["notify"], conditions=[]), user_rule("o2", [], conditions=[])],
        content=[user_rule("c1", ["notify"], pattern="x")],
        underride=[user_rule("u1", ["notify"], conditions=[])],
    )
    effective = effective_rules(ME, rules)
    assert list(effective) == ["override", "content", "room", "sender", "underride"]
    override_ids = [r["rule_id"] for r in effective["override"]]
    assert override_ids[:3] == [".m.rule.master", "o1", "o2"]
    assert override_ids[3:] == [r["rule_id"] for r in default_rules(ME)["override"][1:]]
    underride_ids = [r["rule_id"] for r in effective["underride"]]
    assert underride_ids[0] == "u1"
    assert underride_ids[1:] == [r["rule_id"] for r in default_rules(ME)["underride"]]
    assert [r["rule_id"] for r in effective["content"]] == ["c1"]
    for kind, values in effective.items():
        for rule in values:
            assert rule["default"] is rule["rule_id"].startswith("."), (kind, rule)


def test_master_rule_comes_first_and_silences_everything() -> None:
    everything = user_rule("everything", ["notify", HIGHLIGHT], conditions=[])
    rules = stored(override=[everything])
    assert highlights(actions_for(message(), rules))
    rules["defaults"] = {".m.rule.master": {"enabled": True}}
    assert actions_for(message(), rules) == []
    assert actions_for(message(**{"m.mentions": {"user_ids": [ME]}}), rules) == []


def test_override_beats_content() -> None:
    rules = stored(content=[user_rule("tea", ["notify", HIGHLIGHT], pattern="tea")])
    assert highlights(actions_for(message("tea time"), rules))
    # .m.rule.suppress_notices (override) wins over the content rule.
    assert actions_for(message("tea time", msgtype="m.notice"), rules) == []


def test_user_override_rules_beat_default_overrides() -> None:
    rules = stored(
        override=[
            user_rule("notices", ["notify"], conditions=[match("content.msgtype", "m.notice")])
        ]
    )
    assert actions_for(message("n", msgtype="m.notice")) == []
    assert actions_for(message("n", msgtype="m.notice"), rules) == ["notify"]


def test_content_beats_room_beats_sender_beats_underride() -> None:
    content = user_rule("tea", ["notify", HIGHLIGHT], pattern="tea")
    room = user_rule(ROOM, [])
    sender = user_rule(OTHER, ["notify", SOUND])
    assert actions_for(message("tea"), stored(content=[content], room=[room])) == [
        "notify",
        HIGHLIGHT,
    ]
    assert actions_for(message("coffee"), stored(content=[content], room=[room])) == []
    assert actions_for(message("coffee"), stored(room=[room], sender=[sender])) == []
    assert actions_for(message("coffee"), stored(sender=[sender])) == ["notify", SOUND]
    # A sender rule only matches that sender; a room rule only that room.
    other = message("coffee", sender="@third:example.org")
    assert actions_for(other, stored(sender=[sender])) == ["notify"]
    elsewhere = dict(message("coffee"), room_id="!elsewhere:example.org")
    assert actions_for(elsewhere, stored(room=[room])) == ["notify"]
    # Sender rule beats the default underride .m.rule.message.
    assert actions_for(message("coffee"), stored(sender=[user_rule(OTHER, [])])) == []


def test_user_underride_rules_beat_default_underrides() -> None:
    quiet = user_rule("quiet", [], conditions=[match("type", "m.room.message")])
    assert actions_for(message()) == ["notify"]
    assert actions_for(message(), stored(underride=[quiet])) == []


def test_first_matching_rule_within_a_kind_wins() -> None:
    tea = user_rule("tea", ["notify", HIGHLIGHT], pattern="tea")
    time_rule = user_rule("time", ["notify", SOUND], pattern="time")
    assert actions_for(message("It's time for tea"), stored(content=[tea, time_rule])) == [
        "notify",
        HIGHLIGHT,
    ]
    assert actions_for(message("It's time for tea"), stored(content=[time_rule, tea])) == [
        "notify",
        SOUND,
    ]


def test_disabled_rules_are_skipped() -> None:
    tea = dict(user_rule("tea", ["notify", HIGHLIGHT], pattern="tea"), enabled=False)
    assert actions_for(message("tea"), stored(content=[tea])) == ["notify"]
    rules = stored()
    rules["defaults"] = {".m.rule.message": {"enabled": False}}
    assert actions_for(message()) == ["notify"]
    assert actions_for(message(), rules) == []
    # ... while the one-to-one rule still applies in a two-person room.
    assert actions_for(message(), rules, member_count=2) == ["notify", SOUND]


def test_default_rule_actions_can_be_changed() -> None:
    rules = stored()
    rules["defaults"] = {".m.rule.message": {"actions": ["notify", HIGHLIGHT]}}
    assert highlights(actions_for(message(), rules))
    effective = effective_rules(ME, rules)
    message_rule = next(r for r in effective["underride"] if r["rule_id"] == ".m.rule.message")
    assert message_rule["actions"] == ["notify", HIGHLIGHT]
    assert message_rule["default"] is True
    # The change does not leak into the pristine defaults.
    pristine = next(r for r in default_rules(ME)["underride"] if r["rule_id"] == ".m.rule.message")
    assert pristine["actions"] == ["notify"]


def test_legacy_actions_are_stripped() -> None:
    assert validate_actions(["dont_notify"]) == []
    assert validate_actions(["notify", "coalesce", SOUND]) == ["notify", SOUND]
    legacy = user_rule("legacy", ["dont_notify"], conditions=[])
    assert actions_for(message(), stored(override=[legacy])) == []
    assert not notifies(actions_for(message(), stored(override=[legacy])))
    mixed = user_rule("mixed", ["coalesce", "notify"], conditions=[])
    assert actions_for(message(), stored(override=[mixed])) == ["notify"]


# The server-default rules


def test_default_rule_ids_and_master_disabled() -> None:
    rules = default_rules(ME)
    assert [r["rule_id"] for r in rules["override"]] == [
        ".m.rule.master",
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ]
    assert [r["rule_id"] for r in rules["underride"]] == [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ]
    assert rules["content"] == rules["room"] == rules["sender"] == []
    master = rules["override"][0]
    assert master["enabled"] is False and master["conditions"] == [] and master["actions"] == []
    every = [r for values in rules.values() for r in values]
    assert all(r["default"] is True for r in every)
    assert all(r["enabled"] is True for r in every if r["rule_id"] != ".m.rule.master")
    # Matrix 1.17 removed the body-based mention rules.
    ids = {r["rule_id"] for r in every}
    assert not ids & {
        ".m.rule.contains_display_name",
        ".m.rule.contains_user_name",
        ".m.rule.roomnotif",
    }


def test_defaults_plain_messages() -> None:
    assert actions_for(message(), member_count=3) == ["notify"]
    assert actions_for(message(), member_count=2) == ["notify", SOUND]
    assert not highlights(actions_for(message()))
    # Body-only mentions no longer highlight (1.17).
    assert not highlights(actions_for(message(f"hey {ME} Me Myself")))
    assert actions_for(message("n", msgtype="m.notice")) == []


def test_defaults_mentions() -> None:
    mention = message("hi", **{"m.mentions": {"user_ids": [ME]}})
    assert actions_for(mention) == ["notify", SOUND, HIGHLIGHT]
    other = message("hi", **{"m.mentions": {"user_ids": ["@someone:example.org"]}})
    assert actions_for(other) == ["notify"]
    room = message("hi", **{"m.mentions": {"room": True}})
    levels = {"room": 50}
    assert actions_for(room, sender_power=50, notification_levels=levels) == ["notify", HIGHLIGHT]
    assert actions_for(room, sender_power=0, notification_levels=levels) == ["notify"]
    not_bool = message("hi", **{"m.mentions": {"room": "true"}})
    assert actions_for(not_bool, sender_power=100) == ["notify"]


def test_defaults_other_events() -> None:
    invite = {
        "type": "m.room.member",
        "state_key": ME,
        "sender": OTHER,
        "content": {"membership": "invite"},
    }
    assert actions_for(invite) == ["notify", SOUND]
    other_invite = dict(invite, state_key="@x:example.org")
    assert actions_for(other_invite) == []
    join = {"type": "m.room.member", "state_key": OTHER, "content": {"membership": "join"}}
    assert actions_for(join) == []
    tombstone = {"type": "m.room.tombstone", "state_key": "", "content": {"body": "moved"}}
    assert actions_for(tombstone) == ["notify", HIGHLIGHT]
    assert actions_for(dict(tombstone, state_key="x")) == []
    reaction = {"type": "m.reaction", "content": {}}
    assert actions_for(reaction) == []
    edit = message("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}})
    assert actions_for(edit) == []
    call = {"type": "m.call.invite", "content": {}}
    assert actions_for(call) == ["notify", {"set_tweak": "sound", "value": "ring"}]
    encrypted = {"type": "m.room.encrypted", "content": {}}
    assert actions_for(encrypted, member_count=2) == ["notify", SOUND]
    assert actions_for(encrypted, member_count=5) == ["notify"]
    assert actions_for({"type": "com.example.custom", "content": {}}) == []


def test_is_user_mention_is_for_the_rules_owner() -> None:
    rules = default_rules("@alice:example.org")
    mention = next(r for r in rules["override"] if r["rule_id"] == ".m.rule.is_user_mention")
    assert mention["conditions"] == [
        {
            "kind": "event_property_contains",
            "key": "content.m\\.mentions.user_ids",
            "value": "@alice:example.org",
        }
    ]


# highlights() / notifies()


def test_highlights_and_notifies() -> None:
    assert highlights([{"set_tweak": "highlight"}])
    assert highlights(["notify", {"set_tweak": "highlight", "value": True}])
    assert not highlights([{"set_tweak": "highlight", "value": False}])
    assert not highlights(["notify", SOUND])
    assert not highlights([])
    assert notifies(["notify"])
    assert notifies([SOUND, "notify"])
    assert not notifies([])
    assert not notifies([HIGHLIGHT])


# Validation


def test_validate_rule_accepts_each_kind() -> None:
    rule = validate_rule("content", "cake", {"pattern": "cake*lie", "actions": ["notify"]})
    assert rule == {
        "rule_id": "cake",
        "enabled": True,
        "actions": ["notify"],
        "pattern": "cake*lie",
    }
    conditions = [match("type", "m.room.message"), {"kind": "room_member_count", "is": "<=10"}]
    rule = validate_rule("override", "o", {"conditions": conditions, "actions": [SOUND]})
    assert rule["conditions"] == conditions and rule["actions"] == [SOUND]
    rule = validate_rule("underride", "u", {"actions": []})
    assert rule["conditions"] == []
    assert validate_rule("room", ROOM, {"actions": []})["rule_id"] == ROOM
    assert validate_rule("sender", OTHER, {"actions": ["notify"]})["rule_id"] == OTHER
    legacy = validate_rule("override", "l", {"actions": ["dont_notify"], "conditions": []})
    assert legacy["actions"] == []


@pytest.mark.parametrize(
    ("kind", "rule_id", "body"),
    [
        ("global", "x", {"actions": []}),
        ("overide", "x", {"actions": []}),
        ("override", ".m.rule.mine", {"actions": [], "conditions": []}),
        ("content", ".dot", {"actions": [], "pattern": "x"}),
        ("override", "a/b", {"actions": [], "conditions": []}),
        ("override", "a\\b", {"actions": [], "conditions": []}),
        ("override", "", {"actions": [], "conditions": []}),
        ("room", "not-a-room", {"actions": []}),
        ("room", OTHER, {"actions": []}),
        ("sender", "not-a-user", {"actions": []}),
        ("sender", ROOM, {"actions": []}),
        ("content", "c", {"actions": []}),  # no pattern
        ("content", "c", {"actions": [], "pattern": 5}),
        ("override", "o", {"conditions": []}),  # no actions
        ("override", "o", {"actions": "notify", "conditions": []}),
        ("override", "o", {"actions": ["beep"], "conditions": []}),
        ("override", "o", {"actions": [{"tweak": "x"}], "conditions": []}),
        ("override", "o", {"actions": [], "conditions": {}}),
        ("override", "o", {"actions": [], "conditions": [{"kind": "com.example.x"}]}),
        ("override", "o", {"actions": [], "conditions": ["event_match"]}),
        ("override", "o", {"actions": [], "conditions": [{"kind": "event_match", "key": "x"}]}),
        ("underride", "u", {"actions": [], "conditions": [{"kind": "event_property_is"}]}),
        ("override", "o", {"actions": [], "conditions": [{"kind": "room_member_count"}]}),
        (
            "override",
            "o",
            {"actions": [], "conditions": [{"kind": "room_member_count", "is": "lots"}]},
        ),
        (
            "override",
            "o",
            {"actions": [], "conditions": [{"kind": "sender_notification_permission"}]},
        ),
    ],
)
def test_validate_rule_refuses(kind: str, rule_id: str, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRule):
        validate_rule(kind, rule_id, body)


def test_kinds_and_condition_kinds() -> None:
    assert push_rules.KINDS == ("override", "content", "room", "sender", "underride")
    assert set(push_rules.CONDITION_KINDS) >= {
        "event_match",
        "event_property_is",
        "event_property_contains",
        "room_member_count",
        "sender_notification_permission",
    }


# One event for many members: each distinct rule matched once, answers never shared wrongly


def test_one_evaluation_serves_many_members_each_their_own_answer() -> None:
    by_name = stored(
        override=[
            user_rule(
                "by_name", ["notify", HIGHLIGHT], conditions=[{"kind": "contains_display_name"}]
            )
        ]
    )
    members = {
        "@ann:example.org": ("Ann", empty_user_rules()),
        "@bob:example.org": ("Bob", empty_user_rules()),
        "@cat:example.org": ("Cat", stored(room=[user_rule(ROOM, [])])),  # muted the room
        "@dan:example.org": ("Dan", stored(content=[user_rule("w", ["notify"], pattern="lunch")])),
        "@eve:example.org": ("Eve", by_name),
        "@fay:example.org": ("Fay", by_name),  # the same rule; her name is not in the body
        # Rule sets of the same shape (each names its owner): only the one named matches.
        "@hal:example.org": ("Hal", own_id_rule("@hal:example.org")),
        "@gil:example.org": ("Gil", own_id_rule("@gil:example.org")),
        "@ivy:example.org": ("Ivy", own_id_rule("@ivy:example.org")),
    }
    event = message(
        "Eve: lunch? ping @GIL:Example.org", **{"m.mentions": {"user_ids": ["@ann:example.org"]}}
    )
    evaluation = push_rules.EventEvaluation(event)
    answers = {}
    for user_id, (name, rules) in members.items():
        context = PushContext(user_id, name, 10, 0, {})
        compiled = push_rules.CompiledRules(effective_rules(user_id, rules))
        actions, actions_json = evaluation.first_match(compiled, context)
        # The same as evaluating this member alone.
        alone = evaluate(effective_rules(user_id, rules), event, context)
        assert actions == alone and actions_json == json.dumps(alone)
        answers[user_id] = actions
    assert highlights(answers["@ann:example.org"])  # mentioned
    assert notifies(answers["@bob:example.org"]) and not highlights(answers["@bob:example.org"])
    assert answers["@cat:example.org"] == []  # their own room rule: silent
    assert answers["@dan:example.org"] == ["notify"]  # their keyword
    assert highlights(answers["@eve:example.org"])  # their name
    assert not highlights(answers["@fay:example.org"])
    assert answers["@gil:example.org"] == ["notify", {"set_tweak": "sound", "value": "ping"}]
    assert answers["@hal:example.org"] == answers["@ivy:example.org"] == ["notify"]
    shapes = {push_rules.CompiledRules(effective_rules(u, r), u).shape for u, (_, r) in
              members.items() if u in ("@gil:example.org", "@hal:example.org")}  # fmt: skip
    assert len(shapes) == 1


def own_id_rule(user_id: str) -> dict[str, Any]:
    sound = {"set_tweak": "sound", "value": "ping"}
    return stored(content=[user_rule("me", ["notify", sound], pattern=user_id)])


def test_named_finds_exactly_the_members_whose_id_the_event_contains() -> None:
    """The same answer as asking of each member whether their ID (ignoring case) is a
    substring of the event, which is what decides whether a member may share an answer."""
    members = [
        "@alice:example.org", "@Bob:example.org", "@al:example.org", "@carol:example.org",
        "@alice:example.org.evil", "@dave:example.org", "@émile:example.org", "@bob:example.org",
    ]  # fmt: skip
    event = {
        "type": "m.room.message", "sender": "@carol:example.org",
        "content": {"body": "hi @ALICE:example.org.evil and @al:example.orgx, bob@x",
                    "m.mentions": {"user_ids": ["@bob:EXAMPLE.org", "@Émile:example.org"]}},
    }  # fmt: skip
    evaluation = push_rules.EventEvaluation(event)
    text = json.dumps(event, ensure_ascii=False).lower()
    expected = {m for m in members if m.lower() in text}
    assert evaluation.named(members) == expected
    assert expected == {
        "@alice:example.org", "@alice:example.org.evil", "@al:example.org", "@Bob:example.org",
        "@carol:example.org", "@émile:example.org", "@bob:example.org",
    }  # fmt: skip
    assert push_rules.EventEvaluation({"type": "m.typing"}).named(members) == set()


def test_users_share_the_predefined_rules_that_do_not_name_them() -> None:
    ann, bob = "@ann:example.org", "@bob:example.org"
    ann_rules, bob_rules = default_rules(ann), default_rules(bob)
    for kind, rules in ann_rules.items():
        for mine, theirs in zip(rules, bob_rules[kind], strict=True):
            names_owner = ann in json.dumps(mine)
            assert (mine is theirs) is not names_owner
            assert json.dumps(mine).replace(ann, bob) == json.dumps(theirs)
    # A change to a default rule is the changer's alone, however the rules are shared.
    changed = empty_user_rules()
    changed["defaults"] = {".m.rule.message": {"enabled": False, "actions": []}}
    before = json.dumps(default_rules(bob))
    effective_rules(ann, changed)
    push_rules.CompiledRules(effective_rules(ann, changed), ann)
    assert json.dumps(default_rules(bob)) == before
    bob_message = next(r for r in effective_rules(bob, empty_user_rules())["underride"]
                       if r["rule_id"] == ".m.rule.message")  # fmt: skip
    assert bob_message["enabled"] is True and bob_message["actions"] == ["notify"]
    # Compiled alike: the shared rules' entries are the same objects.
    ann_compiled = push_rules.CompiledRules(effective_rules(ann, empty_user_rules()), ann)
    bob_compiled = push_rules.CompiledRules(effective_rules(bob, empty_user_rules()), bob)
    shared = [a for a, b in zip(ann_compiled.entries, bob_compiled.entries, strict=True) if a is b]
    assert len(shared) == len(ann_compiled.entries) - 2  # all but the two naming the owner
    assert ann_compiled.shape == bob_compiled.shape
