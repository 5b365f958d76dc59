"""State resolution v2 (room versions 2-11) and v2.1 (room version 12), as pure functions.

The caller hands over every event the algorithm may look at (the events in the state
sets and their auth chains) keyed by event ID, each carrying its ``event_id``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rooms.auth import AuthError, auth_types_for_event, check_auth
from rooms.power_levels import power_levels_from_state
from rooms.versions import RoomVersion

JsonDict = dict[str, Any]
StateKey = tuple[str, str]
StateIds = Mapping[StateKey, str]


def _key(event: JsonDict) -> StateKey:
    return (str(event["type"]), str(event["state_key"]))


def _auth_ids(event: JsonDict) -> list[str]:
    """Auth event IDs (v1/v2 events list ``[id, hashes]`` pairs)."""
    return [a[0] if isinstance(a, list) else a for a in event.get("auth_events") or []]


def is_power_event(event: JsonDict) -> bool:
    if "state_key" not in event:
        return False
    if event["type"] in ("m.room.power_levels", "m.room.join_rules"):
        return True
    if event["type"] == "m.room.member":
        membership = (event.get("content") or {}).get("membership")
        return membership in ("leave", "ban") and event.get("sender") != event.get("state_key")
    return False


def auth_chain(event_ids: Iterable[str], events: Mapping[str, JsonDict]) -> set[str]:
    """Every event reachable through ``auth_events`` from the given ones (not themselves)."""
    seen: set[str] = set()
    stack = [a for e in event_ids if e in events for a in _auth_ids(events[e])]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in events:
            stack.extend(_auth_ids(events[current]))
    return seen


def separate(state_sets: Sequence[StateIds]) -> tuple[dict[StateKey, str], set[str]]:
    """Split into the unconflicted state map and the conflicted state set."""
    unconflicted: dict[StateKey, str] = {}
    conflicted: set[str] = set()
    all_keys: set[StateKey] = set()
    for state in state_sets:
        all_keys.update(state.keys())
    for key in all_keys:
        values = {state.get(key) for state in state_sets}
        present = {v for v in values if v is not None}
        if len(values) == 1 and present:
            unconflicted[key] = present.pop()
        else:
            conflicted.update(present)
    return unconflicted, conflicted


def conflicted_subgraph(conflicted: set[str], events: Mapping[str, JsonDict]) -> set[str]:
    """v2.1: events on an auth path from one conflicted event to another (endpoints too)."""
    reachable: set[str] = set()
    stack = list(conflicted)
    while stack:
        current = stack.pop()
        if current in reachable or current not in events:
            continue
        reachable.add(current)
        stack.extend(_auth_ids(events[current]))
    # Walk back from the conflicted events along reversed auth edges, inside ``reachable``.
    reverse: dict[str, list[str]] = {}
    for event_id in reachable:
        for parent in _auth_ids(events[event_id]):
            reverse.setdefault(parent, []).append(event_id)
    on_path: set[str] = set()
    stack = [c for c in conflicted if c in reachable]
    while stack:
        current = stack.pop()
        if current in on_path:
            continue
        on_path.add(current)
        stack.extend(reverse.get(current, ()))
    return on_path


def _create_event_for(
    event: JsonDict, events: Mapping[str, JsonDict], version: RoomVersion
) -> JsonDict | None:
    if version.room_id_from_create_event:
        return events.get("$" + str(event.get("room_id", ""))[1:])
    for auth_id in _auth_ids(event):
        candidate = events.get(auth_id)
        if candidate is not None and candidate.get("type") == "m.room.create":
            return candidate
    return None


def _sender_power(event: JsonDict, events: Mapping[str, JsonDict], version: RoomVersion) -> float:
    state: dict[StateKey, JsonDict] = {}
    for auth_id in _auth_ids(event):
        auth_event = events.get(auth_id)
        if auth_event is not None and auth_event.get("type") in (
            "m.room.power_levels",
            "m.room.create",
        ):
            state[_key(auth_event)] = auth_event
    create = _create_event_for(event, events, version)
    if create is not None:
        state[("m.room.create", "")] = create
    return power_levels_from_state(state, version).user_level(str(event.get("sender")))


def reverse_topological_power_sort(
    event_ids: set[str], events: Mapping[str, JsonDict], version: RoomVersion
) -> list[str]:
    """Kahn's algorithm over auth edges, picking the smallest by (-power, ts, event ID)."""
    children: dict[str, list[str]] = {e: [] for e in event_ids}
    in_degree = dict.fromkeys(event_ids, 0)
    for event_id in event_ids:
        for parent in _auth_ids(events[event_id]):
            if parent in event_ids:
                children[parent].append(event_id)
                in_degree[event_id] += 1

    def sort_key(event_id: str) -> tuple[float, int, str]:
        event = events[event_id]
        return (
            -_sender_power(event, events, version),
            int(event.get("origin_server_ts", 0)),
            event_id,
        )

    heap = [(sort_key(e), e) for e, degree in in_degree.items() if degree == 0]
    heapq.heapify(heap)
    ordered: list[str] = []
    while heap:
        _, event_id = heapq.heappop(heap)
        ordered.append(event_id)
        for child in children[event_id]:
            in_degree[child] -= 1
            if in_degree[child] == 0:
                heapq.heappush(heap, (sort_key(child), child))
    return ordered


def iterative_auth_checks(
    ordered: Sequence[str],
    base: Mapping[StateKey, str],
    events: Mapping[str, JsonDict],
    version: RoomVersion,
    rejected: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[StateKey, str]:
    state = dict(base)
    for event_id in ordered:
        event = events[event_id]
        auth_state: dict[StateKey, JsonDict] = {}
        for auth_id in _auth_ids(event):
            auth_event = events.get(auth_id)
            if auth_event is not None and auth_id not in rejected and "state_key" in auth_event:
                auth_state[_key(auth_event)] = auth_event
        create = _create_event_for(event, events, version)
        if create is not None:
            auth_state.setdefault(("m.room.create", ""), create)
        for key in auth_types_for_event(event, version):
            if key in state and state[key] in events:
                auth_state[key] = events[state[key]]
        try:
            check_auth(event, auth_state, version)
        except AuthError:
            continue
        state[_key(event)] = event_id
    return state


def _mainline_position(
    event: JsonDict, mainline_index: dict[str, int], events: Mapping[str, JsonDict]
) -> float:
    current: JsonDict | None = event
    seen: set[str] = set()
    while current is not None:
        next_power: JsonDict | None = None
        for auth_id in _auth_ids(current):
            auth_event = events.get(auth_id)
            if auth_event is not None and auth_event.get("type") == "m.room.power_levels":
                next_power = auth_event
                break
        if next_power is None or next_power["event_id"] in seen:
            return math.inf
        seen.add(next_power["event_id"])
        if next_power["event_id"] in mainline_index:
            return mainline_index[next_power["event_id"]]
        current = next_power
    return math.inf


def mainline_sort(
    event_ids: Iterable[str], power_event_id: str | None, events: Mapping[str, JsonDict]
) -> list[str]:
    mainline: list[str] = []
    current = power_event_id
    while current is not None and current in events and current not in mainline:
        mainline.append(current)
        current = next(
            (
                a
                for a in _auth_ids(events[current])
                if a in events and events[a].get("type") == "m.room.power_levels"
            ),
            None,
        )
    index = {event_id: i for i, event_id in enumerate(mainline)}

    def sort_key(event_id: str) -> tuple[float, int, str]:
        event = events[event_id]
        position = _mainline_position(event, index, events)
        return (-position, int(event.get("origin_server_ts", 0)), event_id)

    return sorted(event_ids, key=sort_key)


def resolve_state(
    state_sets: Sequence[StateIds],
    events: Mapping[str, JsonDict],
    version: RoomVersion,
    rejected: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[StateKey, str]:
    """Resolve several states into one, by state resolution v2 (or v2.1 for room v12)."""
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted
    chains = [auth_chain(s.values(), events) for s in state_sets]
    auth_difference = set[str]().union(*chains) - set[str].intersection(*chains)
    full_conflicted = conflicted | auth_difference
    if version.state_res == 21:
        full_conflicted |= conflicted_subgraph(conflicted, events)
    full_conflicted = {e for e in full_conflicted if e in events}

    power_events = {e for e in full_conflicted if is_power_event(events[e])}
    for event_id in list(power_events):
        power_events |= auth_chain([event_id], events) & full_conflicted
    ordered_power = reverse_topological_power_sort(power_events, events, version)
    start = {} if version.state_res == 21 else unconflicted
    partial = iterative_auth_checks(ordered_power, start, events, version, rejected)

    others = full_conflicted - power_events
    ordered_others = mainline_sort(others, partial.get(("m.room.power_levels", "")), events)
    resolved = iterative_auth_checks(ordered_others, partial, events, version, rejected)
    resolved.update(unconflicted)
    return resolved
