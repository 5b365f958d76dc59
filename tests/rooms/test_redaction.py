"""The redaction algorithm per room version: exactly which keys survive."""

from __future__ import annotations

from typing import Any

import pytest

from rooms.redaction import redact
from tests.rooms.builders import version

V1_TO_5 = ["1", "2", "3", "4", "5"]
V6_TO_10 = ["6", "7", "8", "9", "10"]
PRE_V11 = V1_TO_5 + V6_TO_10
V11_PLUS = ["11", "12"]
ALL = PRE_V11 + V11_PLUS

TOP_LEVEL_COMMON = {
    "event_id": "$e:x",
    "type": "TYPE",
    "room_id": "!r:x",
    "sender": "@u:x",
    "state_key": "",
    "hashes": {"sha256": "aGFzaA"},
    "signatures": {"x": {"ed25519:1": "c2ln"}},
    "depth": 3,
    "prev_events": ["$p:x"],
    "auth_events": ["$a:x"],
    "origin_server_ts": 1000,
}
TOP_LEVEL_PRE_V11_ONLY = {"prev_state": [], "origin": "x", "membership": "join"}
TOP_LEVEL_NEVER = {"unsigned": {"age": 1}, "redacts": "$r:x", "age_ts": 1, "extra": "junk"}


def _event(event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        **TOP_LEVEL_COMMON,
        **TOP_LEVEL_PRE_V11_ONLY,
        **TOP_LEVEL_NEVER,
        "type": event_type,
        "content": content,
    }


def _content_after(event_type: str, content: dict[str, Any], room_version: str) -> Any:
    return redact(_event(event_type, content), version(room_version))["content"]


@pytest.mark.parametrize("room_version", PRE_V11)
def test_top_level_keys_before_v11(room_version: str) -> None:
    redacted = redact(_event("m.room.message", {"body": "x"}), version(room_version))
    expected = {**TOP_LEVEL_COMMON, **TOP_LEVEL_PRE_V11_ONLY, "type": "m.room.message"}
    assert redacted == {**expected, "content": {}}


@pytest.mark.parametrize("room_version", V11_PLUS)
def test_top_level_keys_from_v11_drop_origin_membership_prev_state(room_version: str) -> None:
    redacted = redact(_event("m.room.message", {"body": "x"}), version(room_version))
    assert redacted == {**TOP_LEVEL_COMMON, "type": "m.room.message", "content": {}}
    for key in ("origin", "membership", "prev_state", "unsigned", "redacts"):
        assert key not in redacted


@pytest.mark.parametrize("room_version", ALL)
def test_redact_does_not_modify_input(room_version: str) -> None:
    event = _event("m.room.member", {"membership": "join", "displayname": "D"})
    snapshot = repr(event)
    redact(event, version(room_version))
    assert repr(event) == snapshot


@pytest.mark.parametrize("room_version", ALL)
def test_unknown_event_type_loses_all_content(room_version: str) -> None:
    assert _content_after("m.room.message", {"body": "hi", "msgtype": "m.text"}, room_version) == {}
    assert _content_after("m.room.topic", {"topic": "t"}, room_version) == {}
    assert _content_after("m.room.name", {"name": "n"}, room_version) == {}


MEMBER_CONTENT = {
    "membership": "join",
    "displayname": "Alice",
    "avatar_url": "mxc://x/y",
    "join_authorised_via_users_server": "@admin:x",
    "third_party_invite": {"display_name": "a...", "signed": {"mxid": "@u:x", "token": "t"}},
    "reason": "because",
}


@pytest.mark.parametrize(
    ("room_version", "expected"),
    [
        *[(v, {"membership": "join"}) for v in ["1", "5", "6", "7", "8"]],
        *[
            (v, {"membership": "join", "join_authorised_via_users_server": "@admin:x"})
            for v in ["9", "10"]
        ],
        *[
            (
                v,
                {
                    "membership": "join",
                    "join_authorised_via_users_server": "@admin:x",
                    "third_party_invite": {"signed": {"mxid": "@u:x", "token": "t"}},
                },
            )
            for v in V11_PLUS
        ],
    ],
)
def test_member_content(room_version: str, expected: dict[str, Any]) -> None:
    assert _content_after("m.room.member", MEMBER_CONTENT, room_version) == expected


@pytest.mark.parametrize("room_version", V11_PLUS)
def test_member_third_party_invite_without_signed_is_dropped(room_version: str) -> None:
    content = {"membership": "invite", "third_party_invite": {"display_name": "d"}}
    assert _content_after("m.room.member", content, room_version) == {"membership": "invite"}


CREATE_CONTENT = {
    "creator": "@u:x",
    "room_version": "5",
    "m.federate": False,
    "predecessor": {"room_id": "!old:x", "event_id": "$old:x"},
    "type": "m.space",
}


@pytest.mark.parametrize("room_version", PRE_V11)
def test_create_keeps_only_creator_before_v11(room_version: str) -> None:
    assert _content_after("m.room.create", CREATE_CONTENT, room_version) == {"creator": "@u:x"}


@pytest.mark.parametrize("room_version", V11_PLUS)
def test_create_keeps_all_content_from_v11(room_version: str) -> None:
    content = {**CREATE_CONTENT, "additional_creators": ["@b:y"]}
    assert _content_after("m.room.create", content, room_version) == content


JOIN_RULES_CONTENT = {
    "join_rule": "restricted",
    "allow": [{"type": "m.room_membership", "room_id": "!s:x"}],
    "other": 1,
}


@pytest.mark.parametrize("room_version", ["1", "5", "6", "7"])
def test_join_rules_before_v8_keep_only_join_rule(room_version: str) -> None:
    assert _content_after("m.room.join_rules", JOIN_RULES_CONTENT, room_version) == {
        "join_rule": "restricted"
    }


@pytest.mark.parametrize("room_version", ["8", "9", "10", "11", "12"])
def test_join_rules_from_v8_keep_allow(room_version: str) -> None:
    assert _content_after("m.room.join_rules", JOIN_RULES_CONTENT, room_version) == {
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership", "room_id": "!s:x"}],
    }


POWER_CONTENT = {
    "ban": 50,
    "events": {"m.room.name": 100},
    "events_default": 0,
    "kick": 50,
    "redact": 50,
    "state_default": 50,
    "users": {"@u:x": 100},
    "users_default": 0,
    "invite": 0,
    "notifications": {"room": 50},
    "historical": 100,
}
POWER_KEPT = {
    k: v for k, v in POWER_CONTENT.items() if k not in ("invite", "notifications", "historical")
}


@pytest.mark.parametrize("room_version", PRE_V11)
def test_power_levels_before_v11_drop_invite(room_version: str) -> None:
    assert _content_after("m.room.power_levels", POWER_CONTENT, room_version) == POWER_KEPT


@pytest.mark.parametrize("room_version", V11_PLUS)
def test_power_levels_from_v11_keep_invite(room_version: str) -> None:
    assert _content_after("m.room.power_levels", POWER_CONTENT, room_version) == {
        **POWER_KEPT,
        "invite": 0,
    }


@pytest.mark.parametrize("room_version", ALL)
def test_history_visibility(room_version: str) -> None:
    content = {"history_visibility": "joined", "x": 1}
    assert _content_after("m.room.history_visibility", content, room_version) == {
        "history_visibility": "joined"
    }


@pytest.mark.parametrize("room_version", V1_TO_5)
def test_aliases_kept_in_v1_to_v5(room_version: str) -> None:
    content = {"aliases": ["#a:x"], "x": 1}
    assert _content_after("m.room.aliases", content, room_version) == {"aliases": ["#a:x"]}


@pytest.mark.parametrize("room_version", V6_TO_10 + V11_PLUS)
def test_aliases_dropped_from_v6(room_version: str) -> None:
    assert _content_after("m.room.aliases", {"aliases": ["#a:x"]}, room_version) == {}


@pytest.mark.parametrize("room_version", V11_PLUS)
def test_redaction_keeps_redacts_in_content_from_v11(room_version: str) -> None:
    content = {"redacts": "$target:x", "reason": "spam"}
    assert _content_after("m.room.redaction", content, room_version) == {"redacts": "$target:x"}


@pytest.mark.parametrize("room_version", PRE_V11)
def test_redaction_event_before_v11_loses_content_and_top_level_redacts(room_version: str) -> None:
    redacted = redact(
        _event("m.room.redaction", {"redacts": "$t:x", "reason": "r"}), version(room_version)
    )
    assert redacted["content"] == {}
    assert "redacts" not in redacted


@pytest.mark.parametrize("room_version", ALL)
def test_missing_or_invalid_content_becomes_empty(room_version: str) -> None:
    event = {k: v for k, v in _event("m.room.member", {}).items() if k != "content"}
    assert redact(event, version(room_version))["content"] == {}
    assert redact({**event, "content": "nope"}, version(room_version))["content"] == {}
