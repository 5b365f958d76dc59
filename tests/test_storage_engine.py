"""The engine's PostgreSQL transactions: plain reads run without BEGIN/COMMIT (one round
trip per query), and everything that writes or locks still runs in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from homeserver.storage.engine import PostgresEngine, Txn, _as_multi_row_insert, _is_plain_read
from tests.conftest import _require_db
from tests.harness import PG_ARGS, create_pg_database, drop_pg_database


@pytest.fixture
def pg() -> Iterator[tuple[PostgresEngine, Any]]:
    _require_db("postgres")
    import psycopg2

    name = create_pg_database()
    engine = PostgresEngine({**PG_ARGS, "dbname": name}, 1, 1)
    conn = psycopg2.connect(**engine.connection_kwargs())
    engine.on_new_connection(conn)  # as the pool opens its connections
    conn.cursor().execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    conn.cursor().execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT, n INTEGER)")
    try:
        yield engine, conn
    finally:
        conn.close()
        drop_pg_database(name)


def in_transaction(conn: Any) -> bool:
    from psycopg2.extensions import TRANSACTION_STATUS_IDLE

    return bool(conn.get_transaction_status() != TRANSACTION_STATUS_IDLE)


def test_plain_reads_open_no_transaction(pg: tuple[PostgresEngine, Any]) -> None:
    engine, conn = pg
    txn = Txn(conn.cursor(), engine)
    assert txn.select("SELECT COUNT(*) FROM t") == [(0,)]
    assert txn.select("  select k from t where k = ?", (1,)) == []
    assert not in_transaction(conn)


def test_a_write_opens_the_transaction_and_a_rollback_undoes_it(
    pg: tuple[PostgresEngine, Any],
) -> None:
    engine, conn = pg
    txn = Txn(conn.cursor(), engine)
    txn.select("SELECT COUNT(*) FROM t")
    txn.execute("INSERT INTO t (k) VALUES (?)", (1,))
    txn.execute_many("INSERT INTO t (k) VALUES (?)", [(2,), (3,)])
    assert in_transaction(conn)
    conn.rollback()  # what the pool does when the transaction function raises
    assert Txn(conn.cursor(), engine).select("SELECT COUNT(*) FROM t") == [(0,)]


def test_locking_read_opens_the_transaction(pg: tuple[PostgresEngine, Any]) -> None:
    engine, conn = pg
    txn = Txn(conn.cursor(), engine)
    txn.select("SELECT k FROM t WHERE k = ?" + engine.for_update, (1,))
    assert in_transaction(conn), "a FOR UPDATE outside a transaction would lock nothing"
    conn.commit()
    # The next transaction on the same connection starts autocommitting again.
    txn = Txn(conn.cursor(), engine)
    txn.select("SELECT 1")
    assert not in_transaction(conn)


@pytest.mark.parametrize(
    ("sql", "plain"),
    [
        ("SELECT 1", True),
        ("\n  select a from b", True),
        ("SELECT a FROM b FOR UPDATE", False),
        ("SELECT a FROM b FOR UPDATE SKIP LOCKED", False),
        ("SELECT a FROM b for share", False),
        ("SELECT a FROM b FOR NO KEY UPDATE", False),
        ("SELECT a FROM platform_for_keys", True),
        ("INSERT INTO t VALUES (1)", False),
        ("WITH x AS (DELETE FROM t RETURNING k) SELECT k FROM x", False),
        ("LOCK TABLE t IN EXCLUSIVE MODE", False),
    ],
)
def test_what_counts_as_a_plain_read(sql: str, plain: bool) -> None:
    assert _is_plain_read(sql) is plain


def test_batched_inserts_are_one_statement_of_many_rows(pg: tuple[PostgresEngine, Any]) -> None:
    engine, conn = pg
    txn = Txn(conn.cursor(), engine)
    rows = [(i, f"it's {i}%") for i in range(1, 1201)]  # more than one page, quotes, %
    txn.execute_many("INSERT INTO kv (k, v, n) VALUES (?, ?, 7)", rows)
    # The last page went as one statement of 200 rows, not 200 statements.
    last = bytes(txn._cursor.query)
    assert b";" not in last and last.count(b"(") == 201, last[:200]
    # A repeated key with DO NOTHING: the first row of the key stays.
    txn.execute_many(
        "INSERT INTO kv (k, v, n) VALUES (?, ?, 0) ON CONFLICT (k) DO NOTHING",
        [(5, "again"), (2000, "new"), (2000, "newer")],
    )
    # An upsert repeating a key in one batch works (it stays one statement per row).
    txn.execute_many(
        "INSERT INTO kv (k, v, n) VALUES (?, ?, 1) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        [(3000, "a"), (3000, "b")],
    )
    conn.commit()
    read = Txn(conn.cursor(), engine)
    assert read.select("SELECT COUNT(*), SUM(n) FROM kv") == [(1202, 1200 * 7 + 1)]
    assert read.select("SELECT v FROM kv WHERE k IN (5, 1200, 2000, 3000) ORDER BY k") == [
        ("it's 5%",), ("it's 1200%",), ("new",), ("b",)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("sql", "multi"),
    [
        ("INSERT INTO t (a, b) VALUES (%s, %s)", ("INSERT INTO t (a, b) VALUES %s", "(%s, %s)")),
        ("insert into t values (%s, 0) ON CONFLICT (a) DO NOTHING",
         ("insert into t values %s ON CONFLICT (a) DO NOTHING", "(%s, 0)")),
        ("INSERT INTO t (a) VALUES (%s) ON CONFLICT (a) DO UPDATE SET a = excluded.a", None),
        ("UPDATE t SET a = %s WHERE b = %s", None),
        ("INSERT INTO t (a) SELECT a FROM u WHERE b = %s", None),
        ("INSERT INTO t (a) VALUES (lower(%s))", None),  # a call in the row: left alone
    ],
)  # fmt: skip
def test_which_batches_become_multi_row_inserts(sql: str, multi: tuple[str, str] | None) -> None:
    assert _as_multi_row_insert(sql) == multi
