"""State resolution v2 (room versions 2-11) and v2.1 (room version 12)."""

from __future__ import annotations

from typing import Any

import pytest

from rooms import state_res
from rooms.auth import check_auth
from rooms.state_res import (
    auth_chain,
    conflicted_subgraph,
    is_power_event,
    mainline_sort,
    resolve_state,
    reverse_topological_power_sort,
    separate,
)
from tests.rooms.builders import ALICE, BOB, CAROL, version

JsonDict = dict[str, Any]
StateIds = dict[tuple[str, str], str]

PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")
TOPIC = ("m.room.topic", "")
CREATE = ("m.room.create", "")


def member_key(user: str) -> tuple[str, str]:
    return ("m.room.member", user)


class Dag:
    """A room's events by ID. Before v12 every event cites the create event."""

    def __init__(self, room_version: str) -> None:
        self.version = version(room_version)
        self.v12 = self.version.room_id_from_create_event
        self.room_id = "!CREATE" if self.v12 else "!room:a.example"
        self.events: dict[str, JsonDict] = {}
        content: JsonDict = {"room_version": room_version}
        if not self.version.implicit_room_creator:
            content["creator"] = ALICE
        create: JsonDict = {
            "event_id": "$CREATE",
            "type": "m.room.create",
            "state_key": "",
            "sender": ALICE,
            "content": content,
            "prev_events": [],
            "auth_events": [],
            "origin_server_ts": 0,
            "depth": 1,
        }
        if not self.v12:
            create["room_id"] = self.room_id
        self.events["$CREATE"] = create

    def add(
        self,
        event_id: str,
        event_type: str,
        sender: str,
        content: JsonDict,
        *,
        state_key: str | None = "",
        auth: list[str] = (),  # type: ignore[assignment]
        ts: int = 1,
        prev: list[str] | None = None,
    ) -> str:
        auth_ids = list(auth) if self.v12 else ["$CREATE", *auth]
        event: JsonDict = {
            "event_id": event_id,
            "type": event_type,
            "room_id": self.room_id,
            "sender": sender,
            "content": content,
            "prev_events": prev if prev is not None else ["$somewhere"],
            "auth_events": auth_ids,
            "origin_server_ts": ts,
            "depth": 2,
        }
        if state_key is not None:
            event["state_key"] = state_key
        self.events[event_id] = event
        return event_id

    def users(self, users: dict[str, int]) -> dict[str, int]:
        """v12 creators may not appear in the power levels users map."""
        return {u: lvl for u, lvl in users.items() if not (self.v12 and u == ALICE)}

    def base(self, users: dict[str, int], **pl: Any) -> StateIds:
        """create, Alice's join, power levels, public join rules, Bob and Carol joined."""
        self.add("$IMA", "m.room.member", ALICE, {"membership": "join"}, state_key=ALICE,
                 prev=["$CREATE"])  # fmt: skip
        self.add("$IPOWER", "m.room.power_levels", ALICE, {"users": self.users(users), **pl},
                 auth=["$IMA"])  # fmt: skip
        self.add("$IJR", "m.room.join_rules", ALICE, {"join_rule": "public"},
                 auth=["$IMA", "$IPOWER"])  # fmt: skip
        self.add("$IMB", "m.room.member", BOB, {"membership": "join"}, state_key=BOB,
                 auth=["$IJR", "$IPOWER"])  # fmt: skip
        self.add("$IMC", "m.room.member", CAROL, {"membership": "join"}, state_key=CAROL,
                 auth=["$IJR", "$IPOWER"])  # fmt: skip
        return {
            CREATE: "$CREATE",
            member_key(ALICE): "$IMA",
            PL: "$IPOWER",
            JR: "$IJR",
            member_key(BOB): "$IMB",
            member_key(CAROL): "$IMC",
        }

    def resolve(self, *state_sets: StateIds) -> dict[tuple[str, str], str]:
        return resolve_state(list(state_sets), self.events, self.version)


BOTH = pytest.mark.parametrize("room_version", ["10", "12"])


# --- separate -------------------------------------------------------------------------------


def test_separate_unconflicted_and_conflicted() -> None:
    s1 = {("a", ""): "$1", ("b", ""): "$2", ("c", ""): "$3", ("d", ""): "$5"}
    s2 = {("a", ""): "$1", ("b", ""): "$4", ("c", ""): "$3"}
    s3 = {("a", ""): "$1", ("b", ""): "$2", ("c", ""): "$3", ("e", ""): "$6"}
    unconflicted, conflicted = separate([s1, s2, s3])
    assert unconflicted == {("a", ""): "$1", ("c", ""): "$3"}
    # Differing values, and keys missing from some state set, are conflicted.
    assert conflicted == {"$2", "$4", "$5", "$6"}


def test_separate_single_state_is_all_unconflicted() -> None:
    s = {("a", ""): "$1", ("b", "x"): "$2"}
    assert separate([s]) == (s, set())


def test_resolve_without_conflicts_returns_the_shared_state() -> None:
    s = {("a", ""): "$1", ("b", "x"): "$2"}
    assert resolve_state([s, dict(s)], {}, version("10")) == s


def test_is_power_event() -> None:
    base = {"state_key": "", "sender": ALICE, "content": {}}
    assert is_power_event({**base, "type": "m.room.power_levels"})
    assert is_power_event({**base, "type": "m.room.join_rules"})
    assert not is_power_event({**base, "type": "m.room.topic"})
    assert not is_power_event({"type": "m.room.power_levels", "sender": ALICE})  # not state
    kick = {"type": "m.room.member", "sender": ALICE, "state_key": BOB}
    assert is_power_event({**kick, "content": {"membership": "leave"}})
    assert is_power_event({**kick, "content": {"membership": "ban"}})
    assert not is_power_event({**kick, "content": {"membership": "invite"}})
    leave = {"type": "m.room.member", "sender": BOB, "state_key": BOB}
    assert not is_power_event({**leave, "content": {"membership": "leave"}})


def test_auth_chain_follows_auth_events_including_v1_pairs() -> None:
    events = {
        "$a": {"event_id": "$a", "auth_events": []},
        "$b": {"event_id": "$b", "auth_events": [["$a", {"sha256": "x"}]]},
        "$c": {"event_id": "$c", "auth_events": [["$b", {"sha256": "y"}]]},
        "$d": {"event_id": "$d", "auth_events": ["$a"]},
    }
    assert auth_chain(["$c"], events) == {"$a", "$b"}
    assert auth_chain(["$c", "$d"], events) == {"$a", "$b"}
    assert auth_chain(["$a"], events) == set()


# --- reverse topological power ordering -----------------------------------------------------


@BOTH
def test_higher_power_sorts_first_then_lower_power_wins(room_version: str) -> None:
    """Power beats timestamp: Alice (100) is applied before Bob (50) although Bob's
    event is older, so Bob's (compatible) change is applied last and wins."""
    dag = Dag(room_version)
    users = {ALICE: 100, BOB: 50}
    base = dag.base(users)
    pa_users = dag.users({**users, CAROL: 10})
    pa = dag.add("$PA", "m.room.power_levels", ALICE, {"users": pa_users},
                 auth=["$IMA", "$IPOWER"], ts=200)  # fmt: skip
    pb = dag.add("$PB", "m.room.power_levels", BOB,
                 {"users": dag.users(users), "events": {"m.room.topic": 20}},
                 auth=["$IMB", "$IPOWER"], ts=100)  # fmt: skip
    assert reverse_topological_power_sort({pa, pb}, dag.events, dag.version) == [pa, pb]
    resolved = dag.resolve({**base, PL: pa}, {**base, PL: pb})
    assert resolved[PL] == pb
    assert resolved == {**base, PL: pb}


@BOTH
@pytest.mark.parametrize(("bob_ts", "carol_ts", "winner"), [(300, 200, "$JB"), (200, 300, "$JC")])
def test_equal_power_then_timestamp(
    room_version: str, bob_ts: int, carol_ts: int, winner: str
) -> None:
    dag = Dag(room_version)
    base = dag.base({ALICE: 100, BOB: 100, CAROL: 100})
    jb = dag.add("$JB", "m.room.join_rules", BOB, {"join_rule": "invite"},
                 auth=["$IMB", "$IPOWER"], ts=bob_ts)  # fmt: skip
    jc = dag.add("$JC", "m.room.join_rules", CAROL, {"join_rule": "knock"},
                 auth=["$IMC", "$IPOWER"], ts=carol_ts)  # fmt: skip
    ordered = reverse_topological_power_sort({jb, jc}, dag.events, dag.version)
    assert ordered[-1] == winner
    assert dag.resolve({**base, JR: jb}, {**base, JR: jc})[JR] == winner


@BOTH
@pytest.mark.parametrize("bob_id", ["$jr_a", "$jr_b"])
def test_equal_power_and_timestamp_then_event_id(room_version: str, bob_id: str) -> None:
    dag = Dag(room_version)
    base = dag.base({ALICE: 100, BOB: 100, CAROL: 100})
    carol_id = "$jr_b" if bob_id == "$jr_a" else "$jr_a"
    dag.add(bob_id, "m.room.join_rules", BOB, {"join_rule": "invite"},
            auth=["$IMB", "$IPOWER"], ts=500)  # fmt: skip
    dag.add(carol_id, "m.room.join_rules", CAROL, {"join_rule": "knock"},
            auth=["$IMC", "$IPOWER"], ts=500)  # fmt: skip
    ordered = reverse_topological_power_sort({bob_id, carol_id}, dag.events, dag.version)
    assert ordered == ["$jr_a", "$jr_b"]
    resolved = dag.resolve({**base, JR: bob_id}, {**base, JR: carol_id})
    assert resolved[JR] == "$jr_b"


def test_topology_beats_power_in_the_ordering() -> None:
    """An event's auth events come first even when their sender has less power."""
    dag = Dag("10")
    dag.base({ALICE: 100, BOB: 50})
    low = dag.add("$low", "m.room.join_rules", BOB, {"join_rule": "invite"},
                  auth=["$IMB", "$IPOWER"], ts=1)  # fmt: skip
    high = dag.add("$high", "m.room.power_levels", ALICE, {"users": {ALICE: 100}},
                   auth=["$IMA", "$IPOWER", low], ts=0)  # fmt: skip
    other = dag.add("$other", "m.room.join_rules", CAROL, {"join_rule": "public"},
                    auth=["$IMC", "$IPOWER"], ts=0)  # fmt: skip
    assert reverse_topological_power_sort({high, low, other}, dag.events, dag.version) == [
        low,  # Bob (50) beats Carol (0); Alice's event must wait for it
        high,
        other,
    ]


def test_v12_creator_power_is_infinite_in_the_ordering() -> None:
    dag = Dag("12")
    dag.base({BOB: 10**6})
    a = dag.add("$a", "m.room.join_rules", ALICE, {"join_rule": "invite"},
                auth=["$IMA", "$IPOWER"], ts=900)  # fmt: skip
    b = dag.add("$b", "m.room.join_rules", BOB, {"join_rule": "knock"},
                auth=["$IMB", "$IPOWER"], ts=1)  # fmt: skip
    assert reverse_topological_power_sort({a, b}, dag.events, dag.version) == [a, b]


# --- power events are applied before other state ---------------------------------------------


@BOTH
def test_ban_is_applied_before_the_banned_users_concurrent_state(room_version: str) -> None:
    dag = Dag(room_version)
    base = dag.base({ALICE: 100}, events={"m.room.topic": 0})
    t0 = dag.add("$T0", "m.room.topic", ALICE, {"topic": "old"}, auth=["$IMA", "$IPOWER"],
                 ts=10)  # fmt: skip
    ban = dag.add("$BAN", "m.room.member", ALICE, {"membership": "ban"}, state_key=BOB,
                  auth=["$IMA", "$IPOWER", "$IMB"], ts=20)  # fmt: skip
    t1 = dag.add("$T1", "m.room.topic", BOB, {"topic": "bob's"}, auth=["$IMB", "$IPOWER"],
                 ts=30)  # fmt: skip
    s1 = {**base, TOPIC: t0, member_key(BOB): ban}
    s2 = {**base, TOPIC: t1}
    # Bob's topic was allowed in his own branch.
    state_s2 = {k: dag.events[v] for k, v in s2.items()}
    check_auth(dag.events[t1], state_s2, dag.version)

    resolved = dag.resolve(s1, s2)
    assert resolved[member_key(BOB)] == ban
    assert resolved[TOPIC] == t0


@BOTH
def test_without_a_ban_the_later_topic_wins(room_version: str) -> None:
    dag = Dag(room_version)
    base = dag.base({ALICE: 100}, events={"m.room.topic": 0})
    t0 = dag.add("$T0", "m.room.topic", ALICE, {"topic": "old"}, auth=["$IMA", "$IPOWER"],
                 ts=10)  # fmt: skip
    t1 = dag.add("$T1", "m.room.topic", BOB, {"topic": "bob's"}, auth=["$IMB", "$IPOWER"],
                 ts=30)  # fmt: skip
    assert dag.resolve({**base, TOPIC: t0}, {**base, TOPIC: t1})[TOPIC] == t1


# --- mainline ordering ----------------------------------------------------------------------


def _mainline_dag() -> Dag:
    dag = Dag("10")
    dag.base({ALICE: 100})
    dag.add("$P1", "m.room.power_levels", ALICE, {"users": {ALICE: 100}, "ban": 60},
            auth=["$IMA", "$IPOWER"], ts=2)  # fmt: skip
    dag.add("$P2", "m.room.power_levels", ALICE, {"users": {ALICE: 100}, "ban": 70},
            auth=["$IMA", "$P1"], ts=3)  # fmt: skip
    # A power levels event on a fork, off the mainline of $P2 but based on $IPOWER.
    dag.add("$Q", "m.room.power_levels", ALICE, {"users": {ALICE: 100}, "kick": 10},
            auth=["$IMA", "$IPOWER"], ts=4)  # fmt: skip
    return dag


def test_mainline_sort_orders_by_mainline_position_then_ts_then_id() -> None:
    dag = _mainline_dag()
    topic = "m.room.topic"
    dag.add("$z", topic, ALICE, {}, auth=["$IMA", "$P2"], ts=10)  # position 0
    dag.add("$y", topic, ALICE, {}, auth=["$IMA", "$P1"], ts=20)  # position 1
    dag.add("$y2", topic, ALICE, {}, auth=["$IMA", "$P1"], ts=20)  # position 1, same ts
    dag.add("$x", topic, ALICE, {}, auth=["$IMA", "$IPOWER"], ts=30)  # position 2
    dag.add("$v", topic, ALICE, {}, auth=["$IMA", "$Q"], ts=5)  # via $Q: position 2
    dag.add("$w", topic, ALICE, {}, auth=["$IMA"], ts=40)  # no power levels: infinity
    ordered = mainline_sort(["$z", "$y2", "$y", "$x", "$v", "$w"], "$P2", dag.events)
    assert ordered == ["$w", "$v", "$x", "$y", "$y2", "$z"]


def test_mainline_sort_without_power_levels_falls_back_to_ts_and_id() -> None:
    dag = _mainline_dag()
    dag.add("$b", "m.room.topic", ALICE, {}, auth=["$IMA", "$P2"], ts=1)
    dag.add("$a", "m.room.topic", ALICE, {}, auth=["$IMA", "$IPOWER"], ts=1)
    dag.add("$c", "m.room.topic", ALICE, {}, auth=["$IMA", "$P1"], ts=0)
    assert mainline_sort(["$a", "$b", "$c"], None, dag.events) == ["$c", "$a", "$b"]


def test_mainline_sort_does_not_count_the_event_itself() -> None:
    """The list e1..em starts at the power levels event *cited* by e, not e itself."""
    dag = _mainline_dag()
    dag.add("$n", "m.room.name", ALICE, {}, auth=["$IMA", "$IPOWER"], ts=50)
    # $P1 cites $IPOWER (position 2), like $n: tie broken by timestamp (2 < 50).
    assert mainline_sort(["$n", "$P1"], "$P2", dag.events) == ["$P1", "$n"]


@BOTH
def test_resolved_non_power_state_follows_mainline_not_timestamp(room_version: str) -> None:
    dag = Dag(room_version)
    base = dag.base({ALICE: 100})
    p1_users = dag.users({ALICE: 100, CAROL: 1})
    p1 = dag.add("$P1", "m.room.power_levels", ALICE, {"users": p1_users},
                 auth=["$IMA", "$IPOWER"], ts=5)  # fmt: skip
    new = dag.add("$TNEW", "m.room.topic", ALICE, {"topic": "new"}, auth=["$IMA", p1], ts=100)
    old = dag.add("$TOLD", "m.room.topic", ALICE, {"topic": "old"}, auth=["$IMA", "$IPOWER"],
                  ts=500)  # fmt: skip
    resolved = dag.resolve({**base, PL: p1, TOPIC: new}, {**base, PL: p1, TOPIC: old})
    # $TOLD sits earlier in the mainline of $P1 and sorts first despite its later timestamp.
    assert resolved[TOPIC] == new
    assert resolved[PL] == p1


# --- v2.1 (room version 12) -----------------------------------------------------------------


@pytest.mark.parametrize(("room_version", "winner"), [("10", "$JR0"), ("12", "$JRB")])
def test_v21_starts_iterative_auth_from_an_empty_state(room_version: str, winner: str) -> None:
    """Bob changed the join rules while he had power; Alice later demoted him on a branch
    that both states share (so the demotion is unconflicted). v2 checks Bob's event against
    the unconflicted (demoted) power levels and drops it; v2.1 starts from an empty state,
    so Bob's event is checked against its own auth events and stands."""
    dag = Dag(room_version)
    dag.add("$IMA", "m.room.member", ALICE, {"membership": "join"}, state_key=ALICE,
            prev=["$CREATE"])  # fmt: skip
    dag.add("$POLD", "m.room.power_levels", ALICE, {"users": dag.users({ALICE: 100, BOB: 100})},
            auth=["$IMA"])  # fmt: skip
    dag.add("$JR0", "m.room.join_rules", ALICE, {"join_rule": "public"},
            auth=["$IMA", "$POLD"])  # fmt: skip
    dag.add("$IMB", "m.room.member", BOB, {"membership": "join"}, state_key=BOB,
            auth=["$JR0", "$POLD"])  # fmt: skip
    dag.add("$PNEW", "m.room.power_levels", ALICE, {"users": dag.users({ALICE: 100, BOB: 0})},
            auth=["$IMA", "$POLD"], ts=5)  # fmt: skip
    dag.add("$JRB", "m.room.join_rules", BOB, {"join_rule": "invite"},
            auth=["$IMB", "$POLD"], ts=6)  # fmt: skip
    common = {CREATE: "$CREATE", member_key(ALICE): "$IMA", member_key(BOB): "$IMB",
              PL: "$PNEW"}  # fmt: skip
    resolved = dag.resolve({**common, JR: "$JRB"}, {**common, JR: "$JR0"})
    assert resolved[JR] == winner
    assert resolved[PL] == "$PNEW"


def _dag(edges: dict[str, list[str]]) -> dict[str, JsonDict]:
    return {e: {"event_id": e, "auth_events": auth} for e, auth in edges.items()}


def test_conflicted_subgraph_is_the_paths_between_conflicted_events() -> None:
    events = _dag(
        {
            "$A": [],
            "$B": ["$A"],
            "$C": ["$B"],
            "$D": ["$A"],
            "$E": ["$C"],
            "$F": ["$E", "$D"],
            "$G": ["$F"],
        }
    )
    # A chain: C -> B -> A.
    assert conflicted_subgraph({"$A", "$C"}, events) == {"$A", "$B", "$C"}
    # A diamond: F -> E -> C -> B -> A and F -> D -> A.
    assert conflicted_subgraph({"$A", "$F"}, events) == {"$A", "$B", "$C", "$D", "$E", "$F"}
    # Only the branch leading to the other endpoint.
    assert conflicted_subgraph({"$C", "$G"}, events) == {"$C", "$E", "$F", "$G"}
    # No path between C and D: their common ancestors A, B are not on a path.
    result = conflicted_subgraph({"$C", "$D"}, events)
    assert not result & {"$A", "$B", "$E", "$F", "$G"}
    assert result <= {"$C", "$D"}


def test_conflicted_subgraph_ignores_unknown_events() -> None:
    events = _dag({"$B": ["$A", "$missing"], "$C": ["$B"]})
    # $A is unknown, so there is no known path from $C to it: $B is not included.
    assert "$B" not in conflicted_subgraph({"$C", "$A"}, events)
    assert conflicted_subgraph({"$C", "$B"}, events) == {"$B", "$C"}


@pytest.mark.parametrize("room_version", ["10", "12"])
def test_v21_full_conflicted_set_includes_the_subgraph(
    room_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob's join lies on the auth path from his join rules change to the old join rules and
    is in every state's auth chain (cited by an unconflicted topic), so it is not in the auth
    difference: only v2.1 adds it to the full conflicted set and re-checks it."""
    dag = Dag(room_version)
    base = dag.base({ALICE: 100, BOB: 100}, events={"m.room.topic": 0})
    topic = dag.add("$TB", "m.room.topic", BOB, {"topic": "t"}, auth=["$IMB", "$IPOWER"], ts=2)
    jb = dag.add("$JB", "m.room.join_rules", BOB, {"join_rule": "invite"},
                 auth=["$IMB", "$IPOWER"], ts=7)  # fmt: skip
    base = {**base, TOPIC: topic}
    assert conflicted_subgraph({jb, "$IJR"}, dag.events) == {jb, "$IMB", "$IJR"}

    checked: list[list[str]] = []
    original = state_res.iterative_auth_checks

    def recording(ordered: Any, *args: Any, **kwargs: Any) -> Any:
        checked.append(list(ordered))
        return original(ordered, *args, **kwargs)

    monkeypatch.setattr(state_res, "iterative_auth_checks", recording)
    resolved = dag.resolve({**base, JR: jb}, base)
    assert resolved[JR] == jb
    power_pass = checked[0]
    if room_version == "12":
        assert power_pass == ["$IJR", "$IMB", jb]
    else:
        assert power_pass == ["$IJR", jb]


# --- unconflicted state wins ----------------------------------------------------------------


@BOTH
def test_unconflicted_state_is_kept_even_if_it_would_fail_auth_now(room_version: str) -> None:
    dag = Dag(room_version)
    base = dag.base({ALICE: 100}, events={"m.room.topic": 0})
    topic = dag.add("$TB", "m.room.topic", BOB, {"topic": "b"}, auth=["$IMB", "$IPOWER"], ts=3)
    ban = dag.add("$BAN", "m.room.member", ALICE, {"membership": "ban"}, state_key=BOB,
                  auth=["$IMA", "$IPOWER", "$IMB"], ts=4)  # fmt: skip
    resolved = dag.resolve({**base, TOPIC: topic, member_key(BOB): ban}, {**base, TOPIC: topic})
    assert resolved[member_key(BOB)] == ban
    assert resolved[TOPIC] == topic


@BOTH
def test_unconflicted_state_replaces_older_events_from_the_auth_difference(
    room_version: str,
) -> None:
    """An older power levels event reaches the full conflicted set through the auth
    difference and passes the iterative checks; the unconflicted one still wins."""
    dag = Dag(room_version)
    users = {ALICE: 100, BOB: 50}
    base = dag.base(users)
    p1 = dag.add("$P1", "m.room.power_levels", ALICE, {"users": dag.users({**users, CAROL: 5})},
                 auth=["$IMA", "$IPOWER"], ts=50)  # fmt: skip
    p2 = dag.add("$P2", "m.room.power_levels", ALICE, {"users": dag.users({**users, CAROL: 7})},
                 auth=["$IMA", "$IPOWER"], ts=10)  # fmt: skip
    jx = dag.add("$JX", "m.room.join_rules", BOB, {"join_rule": "invite"},
                 auth=["$IMB", p1], ts=60)  # fmt: skip
    s1 = {**base, PL: p2, JR: jx}
    s2 = {**base, PL: p2}
    resolved = dag.resolve(s1, s2)
    assert resolved[PL] == p2
    assert resolved[JR] == jx
    assert resolved[member_key(CAROL)] == "$IMC"


@BOTH
def test_resolution_is_independent_of_state_set_order(room_version: str) -> None:
    dag = Dag(room_version)
    base = dag.base({ALICE: 100, BOB: 100, CAROL: 100})
    jb = dag.add("$JB", "m.room.join_rules", BOB, {"join_rule": "invite"},
                 auth=["$IMB", "$IPOWER"], ts=9)  # fmt: skip
    jc = dag.add("$JC", "m.room.join_rules", CAROL, {"join_rule": "knock"},
                 auth=["$IMC", "$IPOWER"], ts=8)  # fmt: skip
    first = dag.resolve({**base, JR: jb}, {**base, JR: jc})
    second = dag.resolve({**base, JR: jc}, {**base, JR: jb})
    assert first == second
    assert first[JR] == jb


def _bob_topic_dag() -> tuple[Dag, StateIds, str, str]:
    """v12: Bob (100) changes the join rules while Alice changes them too; Bob's join is
    cited by an unconflicted topic, so it is in every auth chain and on no conflicted path."""
    dag = Dag("12")
    base = dag.base({BOB: 100}, events={"m.room.topic": 0})
    topic = dag.add("$TB", "m.room.topic", BOB, {"topic": "t"}, auth=["$IMB", "$IPOWER"], ts=2)
    jb = dag.add("$JB", "m.room.join_rules", BOB, {"join_rule": "invite"},
                 auth=["$IMB", "$IPOWER"], ts=3)  # fmt: skip
    jx = dag.add("$JX", "m.room.join_rules", ALICE, {"join_rule": "knock"},
                 auth=["$IMA", "$IPOWER"], ts=4)  # fmt: skip
    return dag, {**base, TOPIC: topic}, jb, jx


def test_rejected_auth_events_are_not_used() -> None:
    dag, base, jb, jx = _bob_topic_dag()
    states = [{**base, JR: jb}, {**base, JR: jx}]
    # Alice (a creator) sorts first; Bob's change, checked against its auth events, wins.
    assert resolve_state(states, dag.events, dag.version)[JR] == jb
    # If Bob's membership had been rejected, it cannot authorise his change.
    resolved = resolve_state(states, dag.events, dag.version, rejected={"$IMB"})
    assert resolved[JR] == jx
