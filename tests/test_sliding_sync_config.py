"""The pure part of sliding sync: request parsing in both dialects, required-state
matching and combining, list filters."""

from __future__ import annotations

import pytest

from rooms.sliding_sync import (
    ListFilters,
    RequestError,
    RequiredState,
    RoomConfig,
    parse_request,
    parse_required_state,
    room_passes,
)

ME = "@me:example.org"


def test_legacy_required_state_wildcards_lazy_and_me() -> None:
    rs = parse_required_state([["m.room.create", ""], ["*", "*"]])
    assert rs.matches("anything", "at all", ME) and not rs.lazy_members
    rs = parse_required_state([["m.room.member", "$LAZY"], ["m.room.member", "$ME"]])
    assert rs.lazy_members
    assert rs.matches("m.room.member", ME, ME)
    assert not rs.matches("m.room.member", "@other:example.org", ME)
    rs = parse_required_state([["m.room.name", "*"], ["*", ""]])
    assert rs.matches("m.room.name", "x", ME) and rs.matches("m.room.topic", "", ME)
    assert not rs.matches("m.room.topic", "x", ME)
    for bad in ([["only-one"]], [[1, 2]], "text", [["a", "b", "c"]]):
        with pytest.raises(RequestError):
            parse_required_state(bad)


def test_final_required_state_include_exclude() -> None:
    rs = parse_required_state({"include": [{}], "exclude": [{"type": "m.room.create"}],
                               "lazy_members": True})  # fmt: skip
    assert rs.lazy_members and rs.matches("m.room.name", "", ME)
    assert not rs.matches("m.room.create", "", ME)
    by_key = parse_required_state({"include": [{"state_key": ""}]})
    assert by_key.matches("m.room.topic", "", ME) and not by_key.matches("m.room.member", ME, ME)
    with pytest.raises(RequestError):
        parse_required_state({"include": [{"type": 5}]})


def test_combining_configs_is_a_superset() -> None:
    names = RequiredState(frozenset({("m.room.name", "")}))
    everything_but_create = RequiredState(
        frozenset({(None, None)}), frozenset({("m.room.create", "")})
    )
    lazy = RequiredState(lazy_members=True)
    combined = names.union(everything_but_create).union(lazy)
    assert combined.lazy_members and combined.matches("m.room.topic", "", ME)
    # Only one side excluded the create event: the union returns it.
    assert names.union(RequiredState(frozenset({(None, None)}))).matches("m.room.create", "", ME)
    assert RoomConfig(1, names).combine(RoomConfig(20, lazy)).timeline_limit == 20
    assert combined.adds_to(names) and not names.adds_to(combined)
    assert RequiredState.from_signature(combined.signature()) == combined


def test_request_both_dialects_and_errors() -> None:
    two_ranges = {"ranges": [[0, 9], [20, 29]], "timeline_limit": 1,
                  "filters": {"is_invite": True}}  # fmt: skip
    legacy = parse_request({"lists": {"a": two_ranges}}, "p1", 30_000)
    assert legacy.pos == "p1" and legacy.timeout_ms == 30_000
    a = legacy.lists["a"]
    assert a.in_range(25) and not a.in_range(15) and a.filters.is_invited is True
    rooms = [f"!r{i}" for i in range(25)]
    assert a.window(rooms) == rooms[:10] + rooms[20:]
    one_range = {"range": [0, 4], "timeline_limit": 2, "filters": {"is_invited": False}}
    final = parse_request({"pos": "p2", "timeout": 5, "lists": {"b": one_range}}, None, None)
    assert (
        final.pos == "p2" and final.timeout_ms == 5 and final.lists["b"].filters.is_invited is False
    )
    assert (
        parse_request({"lists": {"c": {"timeline_limit": 1}}}, None, None)
        .lists["c"]
        .in_range(10**6)
    )
    scoped = parse_request({"extensions": {"typing": {"enabled": True, "lists": ["a"],
                            "rooms": ["*"]}, "unknown_ext": {}}}, None, None)  # fmt: skip
    assert scoped.extensions["typing"].lists == ("a",) and scoped.extensions["typing"].rooms is None
    assert "unknown_ext" not in scoped.extensions
    for body in ({"lists": {"a": {"range": [3, 1], "timeline_limit": 1}}},
                 {"lists": {"a": {"timeline_limit": True}}}, {"timeout": -1},
                 {"lists": {str(i): {"timeline_limit": 1} for i in range(101)}},
                 {"lists": {"a": {"timeline_limit": 1, "filters": {"spaces": "!x"}}}}):  # fmt: skip
        with pytest.raises(RequestError):
            parse_request(body, None, None)


def test_room_filters() -> None:
    def passes(filters: ListFilters, **room: object) -> bool:
        facts = {"membership": "join", "is_dm": False, "encrypted": False, "room_type": None,
                 "tags": set(), "in_spaces": True, **room}  # fmt: skip
        return room_passes(filters, **facts)  # type: ignore[arg-type]

    assert passes(ListFilters(is_dm=True), is_dm=True) and not passes(ListFilters(is_dm=True))
    assert passes(ListFilters(is_invited=True), membership="invite")
    assert not passes(ListFilters(is_invited=False), membership="invite")
    assert passes(ListFilters(room_types=(None,))) and not passes(
        ListFilters(room_types=("m.space",)))  # fmt: skip
    assert not passes(ListFilters(room_types=("m.space",), not_room_types=("m.space",)),
                      room_type="m.space")  # fmt: skip
    assert passes(ListFilters(tags=("u.work",)), tags={"u.work"})
    assert not passes(ListFilters(tags=("u.work",), not_tags=("m.lowpriority",)),
                      tags={"u.work", "m.lowpriority"})  # fmt: skip
    assert not passes(ListFilters(spaces=("!s:x",)), in_spaces=False)
