"""A room state held as a small delta over a shared snapshot.

Every state event makes a new state group, and in a large room most of them are member
events changing one entry of thousands. Holding each group as a whole dict costs the whole
room per join (a 2,000-member room's last hundred joins: 200,000 entries); holding it as the
changes over one shared, never-mutated snapshot costs one entry. A delta that grows past a
share of its snapshot is folded into a new snapshot, so that lookups stay two dict probes
and a chain of deltas never forms.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from typing import Any

StateKey = tuple[str, str]

# A delta is folded into a new snapshot once it holds more than this many entries, or
# more than a sixteenth of the snapshot: copying the snapshot then costs no more than the
# deltas it replaces have already copied.
MIN_FOLD = 32
FOLD_SHARE = 16


class LayeredState(Mapping[StateKey, str]):
    """``base`` overlaid with ``delta``: read-only, and neither dict is ever mutated (the
    snapshot is shared by every state derived from it)."""

    __slots__ = ("_base", "_delta", "_len")

    def __init__(self, base: dict[StateKey, str], delta: dict[StateKey, str]) -> None:
        self._base = base
        self._delta = delta
        self._len = len(base) + sum(1 for key in delta if key not in base)

    def __getitem__(self, key: StateKey) -> str:
        found = self._delta.get(key)
        return found if found is not None else self._base[key]

    def get(self, key: StateKey, default: Any = None) -> Any:
        found = self._delta.get(key)
        return found if found is not None else self._base.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._delta or key in self._base

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[StateKey]:
        yield from self._delta
        delta = self._delta
        yield from (key for key in self._base if key not in delta)

    def items(self) -> ItemsView[StateKey, str]:
        return _Items(self)

    def values(self) -> ValuesView[str]:
        return _Values(self)

    def _items(self) -> Iterator[tuple[StateKey, str]]:
        yield from self._delta.items()
        delta = self._delta
        yield from (item for item in self._base.items() if item[0] not in delta)

    def to_dict(self) -> dict[StateKey, str]:
        whole = dict(self._base)
        whole.update(self._delta)
        return whole

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return len(self) == len(other) and all(other.get(k) == v for k, v in self._items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LayeredState({len(self._delta)} changes over {len(self._base)})"


class _Items(ItemsView[StateKey, str]):
    _mapping: LayeredState

    def __iter__(self) -> Iterator[tuple[StateKey, str]]:
        return self._mapping._items()


class _Values(ValuesView[str]):
    _mapping: LayeredState

    def __iter__(self) -> Iterator[str]:
        return (value for _, value in self._mapping._items())


def state_dict(state: Mapping[StateKey, str]) -> dict[StateKey, str]:
    """A new, mutable dict of ``state`` (at C speed for either form)."""
    if isinstance(state, LayeredState):
        return state.to_dict()
    return dict(state)


def derive_state(
    base: Mapping[StateKey, str], changes: Mapping[StateKey, str]
) -> Mapping[StateKey, str]:
    """``base`` with ``changes`` applied, sharing ``base``'s snapshot where that is cheaper
    than a copy. ``base`` must not be mutated afterwards (cached states never are)."""
    if isinstance(base, LayeredState):
        snapshot, delta = base._base, {**base._delta, **changes}
    elif isinstance(base, dict):
        snapshot, delta = base, dict(changes)
    else:
        return {**base, **changes}
    if len(delta) > max(MIN_FOLD, len(snapshot) // FOLD_SHARE):
        whole = dict(snapshot)
        whole.update(delta)
        return whole
    return LayeredState(snapshot, delta)
