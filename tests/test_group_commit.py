"""Group commit over real HTTP: messages sent while a room's write is in flight are written
together in the next transaction, each still citing the one before it; a write that fails
gives up only what was built on it; retries and state changes wait for what is queued.

The queue is held open by locking the events table from a second PostgreSQL connection;
SQLite's single connection would hold the server's reads with its write, so there only
the failure without a queue is shown."""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import psycopg2
import pytest
import requests

from tests.harness import (
    PG_ARGS,
    Client,
    Response,
    ServerProcess,
    db_execute,
    db_rows,
    new_user,
    q,
)


def create_room(client: Client) -> str:
    resp = client.post("createRoom", {"preset": "public_chat"})
    assert resp.status == 200, resp
    return str(resp.body["room_id"])


def put_message(client: Client, room_id: str, body: str, txn_id: str | None = None) -> Response:
    return client.put(
        f"rooms/{q(room_id)}/send/m.room.message/{q(txn_id or secrets.token_hex(8))}",
        {"msgtype": "m.text", "body": body},
    )


def metric(server: ServerProcess, pattern: str) -> float:
    text = requests.get(server.metrics_url + "/metrics", timeout=10).text
    found = re.search(rf"^{pattern} ([0-9.e+]+)$", text, re.M)
    assert found, pattern
    return float(found.group(1))


def unwritten(server: ServerProcess) -> float:
    return metric(server, r'homeserver_memory_table_size\{name="unwritten_room_events"\}')


def room_locks(server: ServerProcess) -> float:
    return metric(server, r'homeserver_memory_table_size\{name="room_locks"\}')


def writes(server: ServerProcess) -> tuple[float, float]:
    """(transactions, events) written by rooms' writers so far."""
    return (
        metric(server, "homeserver_room_events_per_write_count"),
        metric(server, "homeserver_room_events_per_write_sum"),
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class InBackground:
    """Requests run on threads, their responses collected in order of starting."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.results: list[Response | BaseException] = []

    def start(self, call: Callable[[], Response]) -> int:
        index = len(self.results)
        self.results.append(RuntimeError("not answered"))

        def run() -> None:
            try:
                self.results[index] = call()
            except BaseException as e:  # reported by the test
                self.results[index] = e

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)
        return index

    def answers(self) -> list[Response]:
        for thread in self.threads:
            thread.join(30)
        answers = []
        for result in self.results:
            assert isinstance(result, Response), result
            answers.append(result)
        return answers


@contextmanager
def events_table_locked(server: ServerProcess) -> Iterator[Callable[[], None]]:
    """The server's event inserts wait (reads go on) until the returned release is called."""
    conn = psycopg2.connect(**{**PG_ARGS, "dbname": server.pg_database})
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            conn.rollback()

    try:
        conn.cursor().execute("LOCK TABLE events IN EXCLUSIVE MODE")
        yield release
    finally:
        release()
        conn.close()


def prev_events(server: ServerProcess, event_id: str) -> list[str]:
    rows = db_rows(server, "SELECT prev_event_id FROM event_edges WHERE event_id = ?", (event_id,))
    return sorted(r[0] for r in rows)


def extremities(server: ServerProcess, room_id: str) -> list[str]:
    rows = db_rows(server, "SELECT event_id FROM forward_extremities WHERE room_id = ?", (room_id,))
    return sorted(r[0] for r in rows)


def timeline_ids(client: Client, room_id: str) -> list[str]:
    resp = client.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "100"})
    assert resp.status == 200, resp
    return [e["event_id"] for e in reversed(resp.body["chunk"])]


def assert_one_chain(server: ServerProcess, room_id: str, ids: list[str]) -> None:
    """Each event cites exactly the one before it, and the last is the only extremity."""
    for before, after in pairwise(ids):
        assert prev_events(server, after) == [before]
    assert extremities(server, room_id) == [ids[-1]]


def start_held_write(
    server: ServerProcess, background: InBackground, client: Client, room_id: str
) -> None:
    """Send a message and return once its write is in flight (held by the lock)."""
    before = writes(server)[0]
    background.start(lambda: put_message(client, room_id, "in flight"))
    wait_until(lambda: writes(server)[0] == before + 1, "the first write to start")


def require_postgres(server: ServerProcess) -> None:
    if server.db_kind != "postgres":
        pytest.skip("holding a write open needs a second connection: PostgreSQL only")


def test_messages_queued_behind_a_write_share_the_next_transaction(
    server: ServerProcess, alice: Client, bob: Client
) -> None:
    require_postgres(server)
    room_id = create_room(alice)
    assert bob.post(f"join/{q(room_id)}", {}).status == 200
    first = timeline_ids(alice, room_id)[-1]
    since = alice.get("sync", params={"timeout": "0"}).body["next_batch"]
    before = writes(server)
    background = InBackground()
    with events_table_locked(server) as release:
        start_held_write(server, background, alice, room_id)
        for i in range(5):
            sender = alice if i % 2 else bob
            background.start(lambda s=sender, i=i: put_message(s, room_id, f"queued {i}"))
        wait_until(lambda: unwritten(server) == 6, "five messages queued behind it")
        # A state change waits for the queue (it is written alone, after it).
        background.start(
            lambda: alice.put(f"rooms/{q(room_id)}/state/m.room.topic/", {"topic": "after"})
        )
        wait_until(lambda: room_locks(server) == 1, "the state change to wait")
        assert all(isinstance(r, RuntimeError) for r in background.results)  # none answered
        assert timeline_ids(alice, room_id)[-1] == first  # and readers see none of them
        release()
        answers = background.answers()
    assert [a.status for a in answers] == [200] * 7, answers
    sent = [str(a.body["event_id"]) for a in answers]
    after = writes(server)
    # One write for the first message, one for the five behind it, one for the topic.
    assert (after[0] - before[0], after[1] - before[1]) == (3, 7)
    ids = timeline_ids(alice, room_id)
    ids = ids[ids.index(first) :]
    assert ids[:2] == [first, sent[0]] and ids[-1] == sent[6]
    assert sorted(ids[2:7]) == sorted(sent[1:6])
    assert_one_chain(server, room_id, ids)
    synced = alice.get("sync", params={"since": since, "timeout": "0"}).body
    shown = [e["event_id"] for e in synced["rooms"]["join"][room_id]["timeline"]["events"]]
    assert shown == ids[1:]
    state = alice.get(f"rooms/{q(room_id)}/state/m.room.topic/")
    assert state.body == {"topic": "after"}


def test_messages_of_several_rooms_share_a_transaction(
    server: ServerProcess, alice: Client
) -> None:
    require_postgres(server)
    rooms = [create_room(alice) for _ in range(3)]
    before = writes(server)
    background = InBackground()
    with events_table_locked(server) as release:
        start_held_write(server, background, alice, rooms[0])
        for room_id in rooms[1:]:
            background.start(lambda r=room_id: put_message(alice, r, "queued"))
        background.start(lambda: put_message(alice, rooms[0], "queued too"))
        wait_until(lambda: unwritten(server) == 4, "three messages queued behind it")
        release()
        answers = background.answers()
    assert [a.status for a in answers] == [200] * 4, answers
    after = writes(server)
    assert (after[0] - before[0], after[1] - before[1]) == (2, 4)
    for room_id, answer in zip(rooms[1:], answers[1:3], strict=True):
        assert timeline_ids(alice, room_id)[-1] == answer.body["event_id"]
    assert_one_chain(server, rooms[0], timeline_ids(alice, rooms[0])[-2:])


@contextmanager
def refusing(server: ServerProcess, marker: str) -> Iterator[None]:
    """The database refuses any event whose JSON holds ``marker`` (a failing disk, say);
    PostgreSQL takes a second to do so, so that more can queue behind the write."""
    if server.db_kind == "sqlite":
        db_execute(
            server,
            "CREATE TRIGGER refuse_marked BEFORE INSERT ON events "
            f"WHEN instr(NEW.json, '{marker}') > 0 BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        drop = ["DROP TRIGGER refuse_marked"]
    else:
        db_execute(
            server,
            "CREATE FUNCTION refuse_marked() RETURNS trigger AS $$ BEGIN "
            f"IF position('{marker}' in NEW.json) > 0 THEN "
            "PERFORM pg_sleep(1); RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql",
        )
        db_execute(
            server,
            "CREATE TRIGGER refuse_marked BEFORE INSERT ON events "
            "FOR EACH ROW EXECUTE FUNCTION refuse_marked()",
        )
        drop = ["DROP TRIGGER refuse_marked ON events", "DROP FUNCTION refuse_marked()"]
    try:
        yield
    finally:
        for sql in drop:
            db_execute(server, sql)


def test_a_failed_write_leaves_the_room_writable(server: ServerProcess, alice: Client) -> None:
    room_id = create_room(alice)
    good = str(put_message(alice, room_id, "good").body["event_id"])
    since = alice.get("sync", params={"timeout": "0"}).body["next_batch"]
    with refusing(server, "refuse-me"):
        refused = put_message(alice, room_id, "refuse-me")
        assert refused.status == 500 and refused.body["errcode"] == "M_UNKNOWN", refused
        later = put_message(alice, room_id, "later")
        assert later.status == 200, later
    later_id = str(later.body["event_id"])
    assert prev_events(server, later_id) == [good]
    assert extremities(server, room_id) == [later_id]
    # The failed event's stream position was given up, so syncs are not held back.
    synced = alice.get("sync", params={"since": since, "timeout": "0"}).body
    shown = [e["event_id"] for e in synced["rooms"]["join"][room_id]["timeline"]["events"]]
    assert shown == [later_id]


def test_a_failed_write_gives_up_what_was_queued_behind_it(
    server: ServerProcess, alice: Client
) -> None:
    require_postgres(server)
    room_id = create_room(alice)
    good = str(put_message(alice, room_id, "good").body["event_id"])
    background = InBackground()
    with refusing(server, "refuse-me"):
        before = writes(server)[0]
        background.start(lambda: put_message(alice, room_id, "refuse-me"))
        wait_until(lambda: writes(server)[0] == before + 1, "the refused write to start")
        background.start(lambda: put_message(alice, room_id, "built on it", "retry-me"))
        wait_until(lambda: unwritten(server) == 2, "a message queued behind it")
        refused, behind = background.answers()
    assert writes(server)[0] == before + 1  # the one behind was never written
    for answer in (refused, behind):
        assert answer.status == 500 and answer.body["errcode"] == "M_UNKNOWN", answer
        assert "try again" in answer.body["error"]
    assert extremities(server, room_id) == [good]
    assert unwritten(server) == 0
    # The client's retry (same transaction ID) is drafted anew, on what was written.
    retried = put_message(alice, room_id, "built on it", "retry-me")
    assert retried.status == 200, retried
    retried_id = str(retried.body["event_id"])
    assert timeline_ids(alice, room_id)[-2:] == [good, retried_id]
    assert_one_chain(server, room_id, [good, retried_id])


def test_a_room_whose_event_is_refused_does_not_fail_the_others(
    server: ServerProcess, alice: Client
) -> None:
    """A transaction of several rooms that fails is tried again room by room."""
    require_postgres(server)
    rooms = [create_room(alice) for _ in range(3)]
    background = InBackground()
    with refusing(server, "refuse-me"), events_table_locked(server) as release:
        start_held_write(server, background, alice, rooms[0])
        background.start(lambda: put_message(alice, rooms[1], "refuse-me"))
        background.start(lambda: put_message(alice, rooms[2], "innocent"))
        wait_until(lambda: unwritten(server) == 3, "two rooms' messages queued")
        release()
        in_flight, refused, innocent = background.answers()
    assert in_flight.status == 200 and innocent.status == 200, (in_flight, innocent)
    assert refused.status == 500 and refused.body["errcode"] == "M_UNKNOWN", refused
    assert timeline_ids(alice, rooms[2])[-1] == innocent.body["event_id"]
    assert put_message(alice, rooms[1], "fine now").status == 200


def test_a_stale_retry_in_a_write_keeps_what_came_before_it(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """A retry older than the server's memory (as after a restart) is caught only when
    written: the messages before it in its transaction are written, it is answered with
    its first event, the one built on it is given up, another room's is written."""
    server = server_factory({"caches": {"sizes": {"transaction_ids": 1}}})
    require_postgres(server)
    alice = new_user(server)
    room_id, other_room = create_room(alice), create_room(alice)
    original = put_message(alice, room_id, "original", "old-txn")
    assert original.status == 200, original
    assert put_message(alice, room_id, "pushes old-txn out", "new-txn").status == 200
    background = InBackground()
    with events_table_locked(server) as release:
        start_held_write(server, background, alice, room_id)
        background.start(lambda: put_message(alice, room_id, "queued first"))
        wait_until(lambda: unwritten(server) == 2, "a message queued")
        background.start(lambda: put_message(alice, room_id, "original", "old-txn"))
        wait_until(lambda: unwritten(server) == 3, "the stale retry queued")
        background.start(lambda: put_message(alice, room_id, "built on it", "behind-txn"))
        wait_until(lambda: unwritten(server) == 4, "a message queued behind it")
        background.start(lambda: put_message(alice, other_room, "in the same write"))
        wait_until(lambda: unwritten(server) == 5, "another room's message queued")
        release()
        in_flight, first, retry, behind, other = background.answers()
    assert [in_flight.status, first.status, retry.status, other.status] == [200] * 4
    assert timeline_ids(alice, other_room)[-1] == other.body["event_id"]
    assert retry.body["event_id"] == original.body["event_id"]
    assert behind.status == 500 and behind.body["errcode"] == "M_UNKNOWN", behind
    ids = timeline_ids(alice, room_id)
    assert ids[-2:] == [in_flight.body["event_id"], first.body["event_id"]]
    assert_one_chain(server, room_id, ids[-2:])
    bodies = [e["content"].get("body") for e in alice.get(
        f"rooms/{q(room_id)}/messages", params={"dir": "b"}).body["chunk"]]  # fmt: skip
    assert bodies.count("original") == 1 and "built on it" not in bodies
    # Its client's retry is a new event: the given-up event's claim went with it.
    again = put_message(alice, room_id, "built on it", "behind-txn")
    assert again.status == 200, again
    assert timeline_ids(alice, room_id)[-1] == again.body["event_id"]


def test_a_retry_of_a_queued_message_gets_the_same_event(
    server: ServerProcess, alice: Client
) -> None:
    require_postgres(server)
    room_id = create_room(alice)
    background = InBackground()
    with events_table_locked(server) as release:
        start_held_write(server, background, alice, room_id)
        background.start(lambda: put_message(alice, room_id, "once", "txn-once"))
        wait_until(lambda: unwritten(server) == 2, "the message queued")
        background.start(lambda: put_message(alice, room_id, "once", "txn-once"))
        # The retry waits for the queued message, holding the room's lock meanwhile.
        wait_until(lambda: room_locks(server) == 1, "the retry to wait")
        assert unwritten(server) == 2  # it drafted nothing
        release()
        answers: list[Any] = background.answers()
    assert [a.status for a in answers] == [200, 200, 200], answers
    assert answers[1].body["event_id"] == answers[2].body["event_id"]
    bodies = [
        e["content"].get("body")
        for e in alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "b"}).body["chunk"]
    ]
    assert bodies.count("once") == 1
    assert unwritten(server) == 0
