"""States derived from one another share one snapshot and still read as whole states."""

from __future__ import annotations

from rooms.layered_state import FOLD_SHARE, MIN_FOLD, LayeredState, derive_state, state_dict

StateKey = tuple[str, str]


def _room(members: int) -> dict[StateKey, str]:
    state = {("m.room.create", ""): "$create", ("m.room.power_levels", ""): "$pl"}
    state.update({("m.room.member", f"@u{i}:hs"): f"$join{i}" for i in range(members)})
    return state


def _as_expected(state: object, expected: dict[StateKey, str]) -> None:
    assert isinstance(state, LayeredState)
    assert len(state) == len(expected)
    assert dict(state) == expected
    assert dict(state.items()) == expected
    assert sorted(state.values()) == sorted(expected.values())
    assert set(state) == set(expected)
    assert state_dict(state) == expected
    assert state == expected and expected == state
    for key, value in expected.items():
        assert key in state and state[key] == value and state.get(key) == value
    assert ("m.room.member", "@nobody:hs") not in state
    assert state.get(("m.room.member", "@nobody:hs"), "absent") == "absent"


def test_joins_share_the_snapshot_and_read_as_the_whole_state() -> None:
    base = _room(1_000)
    expected = dict(base)
    state: object = base
    for i in range(1_000, 1_010):
        key = ("m.room.member", f"@u{i}:hs")
        state = derive_state(state, {key: f"$join{i}"})  # type: ignore[arg-type]
        expected[key] = f"$join{i}"
        _as_expected(state, expected)
        assert state._base is base  # type: ignore[attr-defined]
    assert base == _room(1_000), "the shared snapshot is never changed"


def test_a_change_to_an_existing_entry_replaces_it_without_growing_the_state() -> None:
    base = _room(100)
    key = ("m.room.member", "@u5:hs")
    left = derive_state(base, {key: "$leave5"})
    _as_expected(left, {**base, key: "$leave5"})
    rejoined = derive_state(left, {key: "$rejoin5"})
    _as_expected(rejoined, {**base, key: "$rejoin5"})
    assert left[key] == "$leave5", "deriving does not change the state derived from"
    assert base[key] == "$join5"


def test_a_grown_delta_folds_into_a_new_snapshot() -> None:
    base = _room(100)
    limit = max(MIN_FOLD, len(base) // FOLD_SHARE)
    state: object = base
    for i in range(limit + 1):
        state = derive_state(state, {("m.room.member", f"@new{i}:hs"): f"$n{i}"})  # type: ignore[arg-type]
    assert type(state) is dict, "past the fold limit the state is a plain snapshot again"
    assert len(state) == len(base) + limit + 1
    after = derive_state(state, {("m.room.topic", ""): "$topic"})
    assert isinstance(after, LayeredState) and after._base is state


def test_not_equal_to_a_state_that_differs() -> None:
    base = _room(10)
    state = derive_state(base, {("m.room.topic", ""): "$topic"})
    assert state != base
    assert state != {**base, ("m.room.topic", ""): "$other"}
    assert state != {**base, ("m.room.topic", ""): "$topic", ("m.room.name", ""): "$name"}
