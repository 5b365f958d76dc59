"""Writing several rooms' events in one transaction (group commit), on both databases:
a client retry the database already knows drops only that event and what its room built
on it, and the claims of the dropped events are taken back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from homeserver.storage.engine import Engine, SqliteEngine, Txn
from homeserver.storage.events import EventToPersist, TxnKey, persist_events_txn
from homeserver.storage.migrate import prepare_database
from tests.conftest import _require_db
from tests.harness import migrated_pg_engine


@pytest.fixture
def engine(db_kind: str, tmp_path: Any) -> Iterator[Engine]:
    if db_kind == "sqlite":
        sqlite = SqliteEngine(str(tmp_path / "events.db"))
        prepare_database(sqlite)
        yield sqlite
        return
    _require_db("postgres")
    with migrated_pg_engine(prepare=False) as pg:  # (plain connections: none prepares)
        yield pg


def key(txn_id: str) -> TxnKey:
    return TxnKey("@u:example.org", "DEV", "send !room m.room.message", txn_id)


def event(
    event_id: str, room_id: str, stream: int, txn_id: str | None, prev: str | None = None
) -> EventToPersist:
    return EventToPersist(
        event_id=event_id,
        room_id=room_id,
        event_type="m.room.message",
        state_key=None,
        sender="@u:example.org",
        depth=stream,
        origin_server_ts=1000 + stream,
        json_text="{}",
        prev_event_ids=[prev] if prev else [],
        auth_event_ids=[],
        stream_ordering=stream,
        state_before=1,
        state_after=1,
        new_state_group=None,
        membership=None,
        current_state_update=True,
        txn=key(txn_id) if txn_id else None,
    )


def test_refused_retries_drop_only_what_their_rooms_built_on_them(engine: Engine) -> None:
    conn = engine.connect()
    try:
        txn = Txn(conn.cursor(), engine)
        for txn_id, first in (("old-a", "$first-a"), ("old-b", "$first-b")):
            txn.execute(
                "INSERT INTO event_transactions (user_id, device_id, scope, txn_id, event_id, "
                "created_ts) VALUES (?, ?, ?, ?, ?, 1)",
                (*key(txn_id)[:3], txn_id, first),
            )
        evs = [
            event("$a1", "!a", 1, "new-a1"),
            event("$b1", "!b", 2, None),
            event("$a2", "!a", 3, "old-a", "$a1"),  # refused: $a3 cites it
            event("$c1", "!c", 4, "new-c1"),
            event("$a3", "!a", 5, "new-a3", "$a2"),
            event("$b2", "!b", 6, "old-b", "$b1"),  # refused
            event("$c2", "!c", 7, None, "$c1"),
        ]
        refusals = persist_events_txn(txn, evs)
        txn.flush()
        conn.commit()
        assert sorted((r.event_id, r.txn.txn_id) for r in refusals) == [
            ("$first-a", "old-a"),
            ("$first-b", "old-b"),
        ]
        read = Txn(conn.cursor(), engine)
        written = read.select("SELECT event_id FROM events ORDER BY stream_ordering")
        assert [r[0] for r in written] == ["$a1", "$b1", "$c1", "$c2"]
        claims = read.select("SELECT txn_id, event_id FROM event_transactions ORDER BY txn_id")
        assert claims == [
            ("new-a1", "$a1"),
            ("new-c1", "$c1"),
            ("old-a", "$first-a"),
            ("old-b", "$first-b"),
        ]
        extremities = read.select("SELECT room_id, event_id FROM forward_extremities")
        assert sorted(extremities) == [("!a", "$a1"), ("!b", "$b1"), ("!c", "$c2")]
    finally:
        conn.close()


def test_without_refusals_every_event_is_written(engine: Engine) -> None:
    conn = engine.connect()
    try:
        txn = Txn(conn.cursor(), engine)
        evs = [event(f"$e{i}", f"!r{i % 3}", i, f"t{i}" if i % 2 else None) for i in range(1, 10)]
        assert persist_events_txn(txn, evs) == []
        txn.flush()
        conn.commit()
        read = Txn(conn.cursor(), engine)
        assert read.select("SELECT COUNT(*) FROM events") == [(9,)]
        assert read.select("SELECT COUNT(*) FROM event_transactions") == [(5,)]
    finally:
        conn.close()
