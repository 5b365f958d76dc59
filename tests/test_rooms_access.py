"""Who may read what: the history visibility matrix over real HTTP, and auth on writes.

For each ``history_visibility`` one room is built with a fixed timeline and five kinds of
reader; each reader's view through /messages, GET /event, /context and GET /state is
compared with the spec's server behaviour rules (history_visibility.md):

1. world_readable: allow. 2. membership join at the event: allow. 3. shared and the user
joined at any point after the event: allow. 4. invite at the event and invited: allow.
5. otherwise deny.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest

from tests.harness import Client, Response, ServerProcess, new_user

READERS = ("outsider", "invitee", "joiner", "leaver", "banned", "invited_joiner", "rejoiner")
LABELS = ("m1", "m2", "m3", "topic", "m4")

# Which labelled events each reader may see. The timeline (see build_room):
#   m1; invite(invitee, invited_joiner); m2;
#   join(leaver, banned, joiner, invited_joiner, rejoiner); m3;
#   leave(leaver, rejoiner); ban(banned); topic change; m4; join(rejoiner)
ALL = set(LABELS)
EXPECTED: dict[str, dict[str, set[str]]] = {
    "world_readable": {reader: ALL for reader in READERS},
    "shared": {
        "outsider": set(),
        "invitee": set(),  # invited but never joined: rule 3 needs a join
        "joiner": ALL,
        "leaver": {"m1", "m2", "m3"},
        "banned": {"m1", "m2", "m3"},
        "invited_joiner": ALL,
        "rejoiner": ALL,  # rule 3: joined again after the events sent while away
    },
    "invited": {
        "outsider": set(),
        "invitee": {"m2", "m3", "topic", "m4"},  # from the invite onwards
        "joiner": {"m3", "topic", "m4"},  # joined without an invite
        "leaver": {"m3"},
        "banned": {"m3"},
        "invited_joiner": {"m2", "m3", "topic", "m4"},
        "rejoiner": {"m3"},
    },
    "joined": {
        "outsider": set(),
        "invitee": set(),
        "joiner": {"m3", "topic", "m4"},
        "leaver": {"m3"},
        "banned": {"m3"},
        "invited_joiner": {"m3", "topic", "m4"},
        "rejoiner": {"m3"},
    },
}


def q(value: str) -> str:
    return quote(value, safe="")


def send(client: Client, room_id: str, body: str) -> str:
    resp = client.put(
        f"rooms/{q(room_id)}/send/m.room.message/{secrets.token_hex(8)}",
        {"msgtype": "m.text", "body": body},
    )
    assert resp.status == 200, resp
    return str(resp.body["event_id"])


def post_ok(client: Client, path: str, body: dict[str, Any]) -> None:
    resp = client.post(path, body)
    assert resp.status == 200, resp


@dataclass
class Scenario:
    visibility: str
    room_id: str
    alice: Client
    readers: dict[str, Client]
    labels: dict[str, str] = field(default_factory=dict)  # label -> event ID
    own_events: dict[str, str] = field(default_factory=dict)  # reader -> their last member event

    def label_of(self, event_id: str) -> str | None:
        for label, eid in self.labels.items():
            if eid == event_id:
                return label
        return None


def build_room(server: ServerProcess, visibility: str) -> Scenario:
    alice = new_user(server)
    readers = {name: new_user(server) for name in READERS}
    resp = alice.post(
        "createRoom",
        {
            "preset": "public_chat",
            "topic": "original",
            "initial_state": [
                {
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": {"history_visibility": visibility},
                }
            ],
        },
    )
    assert resp.status == 200, resp
    room_id = resp.body["room_id"]
    sc = Scenario(visibility, room_id, alice, readers)
    r = q(room_id)
    sc.labels["m1"] = send(alice, room_id, "m1")
    for name in ("invitee", "invited_joiner"):
        post_ok(alice, f"rooms/{r}/invite", {"user_id": readers[name].user_id})
    sc.labels["m2"] = send(alice, room_id, "m2")
    for name in ("leaver", "banned", "joiner", "invited_joiner", "rejoiner"):
        post_ok(readers[name], f"join/{r}", {})
    sc.labels["m3"] = send(alice, room_id, "m3")
    for name in ("leaver", "rejoiner"):
        post_ok(readers[name], f"rooms/{r}/leave", {})
    post_ok(alice, f"rooms/{r}/ban", {"user_id": readers["banned"].user_id})
    resp = alice.put(f"rooms/{r}/state/m.room.topic", {"topic": "changed"})
    assert resp.status == 200, resp
    sc.labels["topic"] = resp.body["event_id"]
    sc.labels["m4"] = send(alice, room_id, "m4")
    post_ok(readers["rejoiner"], f"join/{r}", {})
    return sc


def read_messages(client: Client, room_id: str) -> Response:
    return client.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "1000"})


@pytest.fixture(scope="module", params=["world_readable", "shared", "invited", "joined"])
def scenario(request: pytest.FixtureRequest, server: ServerProcess) -> Scenario:
    return build_room(server, request.param)


@pytest.mark.parametrize("reader", READERS)
def test_messages_visibility(scenario: Scenario, reader: str) -> None:
    client = scenario.readers[reader]
    expected = EXPECTED[scenario.visibility][reader]
    resp = read_messages(client, scenario.room_id)
    if reader == "outsider" and scenario.visibility != "world_readable":
        assert resp.status == 403, resp
        assert resp.body["errcode"] == "M_FORBIDDEN"
        return
    if not expected and resp.status == 403:
        return  # an invitee who may see nothing may also be refused outright
    assert resp.status == 200, resp
    seen = {scenario.label_of(e["event_id"]) for e in resp.body["chunk"]} - {None}
    assert seen == expected, resp.body["chunk"]
    # The visible events come newest first, in timeline order.
    order = [scenario.label_of(e["event_id"]) for e in resp.body["chunk"]]
    order = [label for label in order if label]
    assert order == [label for label in reversed(LABELS) if label in expected]
    # Nothing but allowed events: every message body returned is an expected label.
    for event in resp.body["chunk"]:
        if event["type"] == "m.room.message":
            assert event["content"]["body"] in expected, event


@pytest.mark.parametrize("reader", ["joiner", "leaver", "banned", "rejoiner"])
def test_own_membership_events_visible(scenario: Scenario, reader: str) -> None:
    """A user can always see the events that change their own membership."""
    client = scenario.readers[reader]
    resp = read_messages(client, scenario.room_id)
    assert resp.status == 200, resp
    own = [
        e["content"]["membership"]
        for e in resp.body["chunk"]
        if e["type"] == "m.room.member" and e["state_key"] == client.user_id
    ]
    expected = {
        "joiner": ["join"],
        "leaver": ["leave", "join"],
        "banned": ["ban", "join"],
        "rejoiner": ["join", "leave", "join"],
    }
    assert own == expected[reader]


@pytest.mark.parametrize("reader", READERS)
def test_get_event_visibility(scenario: Scenario, reader: str) -> None:
    client = scenario.readers[reader]
    expected = EXPECTED[scenario.visibility][reader]
    for label in LABELS:
        event_id = scenario.labels[label]
        resp = client.get(f"rooms/{q(scenario.room_id)}/event/{q(event_id)}")
        if label in expected:
            assert resp.status == 200, (label, resp)
            assert resp.body["event_id"] == event_id
        else:
            assert resp.status == 404, (label, resp)
            assert resp.body["errcode"] == "M_NOT_FOUND"


@pytest.mark.parametrize("reader", READERS)
def test_context_visibility(scenario: Scenario, reader: str) -> None:
    client = scenario.readers[reader]
    expected = EXPECTED[scenario.visibility][reader]
    for label in LABELS:
        event_id = scenario.labels[label]
        resp = client.get(
            f"rooms/{q(scenario.room_id)}/context/{q(event_id)}", params={"limit": "40"}
        )
        if label not in expected:
            assert resp.status == 404, (label, resp)
            continue
        assert resp.status == 200, (label, resp)
        assert resp.body["event"]["event_id"] == event_id
        around = resp.body["events_before"] + resp.body["events_after"]
        around_labels = {scenario.label_of(e["event_id"]) for e in around} - {None}
        assert around_labels == expected - {label}, (label, around)
        for event in around:
            if event["type"] == "m.room.message":
                assert event["content"]["body"] in expected
        # The state in the context may not reveal to a departed user what changed later.
        topic_events = [e for e in resp.body["state"] if e["type"] == "m.room.topic"]
        if reader in ("leaver", "banned") and "topic" not in expected:
            assert all(e["content"]["topic"] == "original" for e in topic_events), topic_events


@pytest.mark.parametrize("reader", READERS)
def test_state_visibility(scenario: Scenario, reader: str) -> None:
    client = scenario.readers[reader]
    r = q(scenario.room_id)
    resp = client.get(f"rooms/{r}/state")
    single = client.get(f"rooms/{r}/state/m.room.topic")
    if scenario.visibility == "world_readable":
        assert resp.status == 200, resp
        current = {(e["type"], e["state_key"]): e for e in resp.body}
        assert ("m.room.create", "") in current
        if reader in ("outsider", "invitee", "joiner", "invited_joiner", "rejoiner"):
            assert current[("m.room.topic", "")]["content"]["topic"] == "changed"
            assert single.body == {"topic": "changed"}
        return
    if reader in ("outsider", "invitee"):
        # Not a member and never was.
        assert resp.status == 403, resp
        assert resp.body["errcode"] == "M_FORBIDDEN"
        assert single.status == 403, single
        return
    assert resp.status == 200, resp
    current = {(e["type"], e["state_key"]): e for e in resp.body}
    member = current[("m.room.member", client.user_id)]["content"]["membership"]
    topic = current[("m.room.topic", "")]["content"]["topic"]
    if reader in ("joiner", "invited_joiner", "rejoiner"):
        assert (member, topic) == ("join", "changed")
        assert single.body == {"topic": "changed"}
        return
    # Left or banned: the state as of leaving, not what changed afterwards.
    assert member == {"leaver": "leave", "banned": "ban"}[reader]
    assert topic == "original"
    assert single.status == 200 and single.body == {"topic": "original"}
    if reader == "leaver":
        banned = scenario.readers["banned"].user_id
        assert current[("m.room.member", banned)]["content"]["membership"] == "join"


def test_visibility_applies_when_the_event_is_sent(alice: Client, server: ServerProcess) -> None:
    """Changing history_visibility is not retrospective; the change events themselves are
    visible when either side of the change allows it."""
    resp = alice.post(
        "createRoom",
        {
            "preset": "public_chat",
            "initial_state": [
                {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
            ],
        },
    )
    room_id = resp.body["room_id"]
    r = q(room_id)

    def set_visibility(value: str) -> str:
        resp = alice.put(
            f"rooms/{r}/state/m.room.history_visibility", {"history_visibility": value}
        )
        assert resp.status == 200, resp
        return str(resp.body["event_id"])

    m1 = send(alice, room_id, "m1")
    h1 = set_visibility("world_readable")
    m2 = send(alice, room_id, "m2")
    h2 = set_visibility("joined")
    m3 = send(alice, room_id, "m3")
    outsider = new_user(server)
    for event_id, visible in ((m1, False), (h1, True), (m2, True), (h2, True), (m3, False)):
        resp = outsider.get(f"rooms/{r}/event/{q(event_id)}")
        assert resp.status == (200 if visible else 404), resp
    # Someone joining now sees the world-readable stretch and nothing from the joined ones.
    joiner = new_user(server)
    assert joiner.post(f"join/{r}", {}).status == 200
    m4 = send(alice, room_id, "m4")
    resp = read_messages(joiner, room_id)
    assert resp.status == 200, resp
    seen = [e["event_id"] for e in resp.body["chunk"]]
    assert [e for e in seen if e in (m1, h1, m2, h2, m3, m4)] == [m4, h2, m2, h1]


# Auth rules on writes


def test_state_needs_power(server: ServerProcess, alice: Client, bob: Client) -> None:
    resp = alice.post("createRoom", {"preset": "public_chat", "name": "orig"})
    room_id = resp.body["room_id"]
    r = q(room_id)
    assert bob.post(f"join/{r}", {}).status == 200
    power = alice.get(f"rooms/{r}/state/m.room.power_levels").body
    assert power["state_default"] == 50
    for event_type, content in (
        ("m.room.name", {"name": "hijacked"}),
        ("m.room.topic", {"topic": "hijacked"}),
        ("com.example.state", {"x": 1}),
        ("m.room.join_rules", {"join_rule": "invite"}),
    ):
        resp = bob.put(f"rooms/{r}/state/{event_type}", content)
        assert resp.status == 403, (event_type, resp)
        assert resp.body["errcode"] == "M_FORBIDDEN"
    assert alice.get(f"rooms/{r}/state/m.room.name").body == {"name": "orig"}
    # Plain messages only need events_default (0).
    assert bob.put(f"rooms/{r}/send/m.room.message/t1", {"body": "hi"}).status == 200
    # With events_default raised, bob can't send either.
    power["events_default"] = 10
    assert alice.put(f"rooms/{r}/state/m.room.power_levels", power).status == 200
    resp = bob.put(f"rooms/{r}/send/m.room.message/t2", {"body": "hi"})
    assert resp.status == 403, resp
    # A non-member can't send at all.
    outsider = new_user(server)
    resp = outsider.put(f"rooms/{r}/send/m.room.message/t3", {"body": "hi"})
    assert resp.status == 403, resp


def test_power_level_changes_above_own_refused(
    server: ServerProcess, alice: Client, bob: Client
) -> None:
    carol = new_user(server)
    resp = alice.post("createRoom", {"preset": "public_chat", "room_version": "10"})
    room_id = resp.body["room_id"]
    r = q(room_id)
    for user in (bob, carol):
        assert user.post(f"join/{r}", {}).status == 200
    power = alice.get(f"rooms/{r}/state/m.room.power_levels").body
    power["users"][bob.user_id] = 50
    power["events"]["m.room.power_levels"] = 50
    assert alice.put(f"rooms/{r}/state/m.room.power_levels", power).status == 200

    def attempt(change: dict[str, Any]) -> Response:
        content = alice.get(f"rooms/{r}/state/m.room.power_levels").body
        for key, value in change.items():
            if key == "users":
                content["users"].update(value)
            else:
                content[key] = value
        return bob.put(f"rooms/{r}/state/m.room.power_levels", content)

    # Raising himself, or anyone, above his own level is refused.
    for change in (
        {"users": {bob.user_id: 100}},
        {"users": {carol.user_id: 60}},
        {"users_default": 60},
        {"ban": 75},
        # Lowering someone above him is refused too.
        {"users": {alice.user_id: 10}},
    ):
        resp = attempt(change)
        assert resp.status == 403, (change, resp)
        assert resp.body["errcode"] == "M_FORBIDDEN"
    current = alice.get(f"rooms/{r}/state/m.room.power_levels").body
    assert current["users"] == {alice.user_id: 100, bob.user_id: 50}
    # Up to his own level is allowed.
    resp = attempt({"users": {carol.user_id: 50}})
    assert resp.status == 200, resp
    assert alice.get(f"rooms/{r}/state/m.room.power_levels").body["users"][carol.user_id] == 50
    # A user without the power level for m.room.power_levels can't change it at all.
    content = alice.get(f"rooms/{r}/state/m.room.power_levels").body
    content["events"]["m.room.power_levels"] = 100
    assert alice.put(f"rooms/{r}/state/m.room.power_levels", content).status == 200
    resp = attempt({"users": {carol.user_id: 0}})
    assert resp.status == 403, resp


def test_v12_creator_power_is_not_changeable(alice: Client, bob: Client) -> None:
    resp = alice.post("createRoom", {"preset": "public_chat", "room_version": "12"})
    r = q(resp.body["room_id"])
    assert bob.post(f"join/{r}", {}).status == 200
    power = alice.get(f"rooms/{r}/state/m.room.power_levels").body
    assert alice.user_id not in power["users"]
    power["users"][bob.user_id] = 100
    assert alice.put(f"rooms/{r}/state/m.room.power_levels", power).status == 200
    # bob (100) may not demote the creator, whose power is infinite.
    power["users"][alice.user_id] = 0
    resp = bob.put(f"rooms/{r}/state/m.room.power_levels", power)
    assert resp.status == 403, resp
    # and the creator may still kick bob
    assert alice.post(f"rooms/{r}/kick", {"user_id": bob.user_id}).status == 200
