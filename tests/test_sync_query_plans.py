"""Every /sync runs its window queries (which members changed, which of the user's
memberships changed); they must read index ranges whose size follows the window, never
a table that grows with every membership event the server has seen (SQLite's planner,
on the migrated schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from homeserver.storage.engine import SqliteEngine
from homeserver.storage.migrate import prepare_database
from homeserver.storage.sync import _member_changes_txn, _membership_changes_txn


class _Recorder:
    """Stands in for a transaction: keeps the statements instead of running them."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def select(self, sql: str, args: Any = ()) -> list[Any]:
        self.statements.append((sql, tuple(args)))
        return []


def test_sync_window_queries_search_an_index_range(tmp_path: Path) -> None:
    engine = SqliteEngine(str(tmp_path / "plans.db"))
    prepare_database(engine)
    recorder = _Recorder()
    _member_changes_txn(recorder, ["!a:example.org", "!b:example.org"], 10, 20)  # type: ignore[arg-type]
    _membership_changes_txn(recorder, "@u:example.org", 10, 20)  # type: ignore[arg-type]
    assert len(recorder.statements) == 2
    conn = engine.connect()
    for sql, args in recorder.statements:
        plan = " | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
        assert "SCAN room_memberships" not in plan, plan
        assert "stream_ordering>?" in plan, plan  # the window bounds the range read


def test_membership_records_keep_what_visibility_needs(tmp_path: Path) -> None:
    """The latest join and the latest membership, whatever the number of display-name
    changes (each another join) in between; the latest record's forgotten flag."""
    from homeserver.storage.engine import Txn
    from homeserver.storage.events import membership_records_txn

    engine = SqliteEngine(str(tmp_path / "records.db"))
    prepare_database(engine)
    conn = engine.connect()
    rows = [("join", 10), ("join", 11), ("join", 12), ("leave", 20), ("join", 30), ("join", 31)]
    rows += [("leave", 40)]
    for index, (membership, stream) in enumerate(rows):
        conn.execute(
            "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership, "
            "stream_ordering) VALUES (?, '!a:x', '@u:x', '@u:x', ?, ?)",
            (f"$e{index}", membership, stream),
        )
    conn.execute(
        "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership, "
        "stream_ordering, forgotten) VALUES ('$b', '!b:x', '@u:x', '@u:x', 'join', 5, 0)"
    )
    conn.commit()
    txn = Txn(conn.cursor(), engine)
    records = membership_records_txn(txn, "@u:x", ["!a:x", "!b:x", "!never:x"])
    assert records["!a:x"] == ([(31, "join"), (40, "leave")], False)
    assert records["!b:x"] == ([(5, "join")], False)
    assert records["!never:x"] == ([], False)
    conn.execute("UPDATE room_memberships SET forgotten = 1 WHERE room_id = '!a:x'")
    assert membership_records_txn(txn, "@u:x", ["!a:x"])["!a:x"][1] is True
