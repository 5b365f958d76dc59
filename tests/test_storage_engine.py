"""The engine's PostgreSQL transactions: plain reads run without BEGIN/COMMIT (one round
trip per query), and everything that writes or locks still runs in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from homeserver.storage.engine import (
    PostgresEngine,
    Txn,
    _as_multi_row_insert,
    _in_lists_as_arrays,
    _is_plain_read,
)
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
    txn.flush()
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
        ("WITH x (k) AS (VALUES (1)) SELECT k FROM x", True),
        ("with\nx (k) AS (VALUES (1)) SELECT t.k FROM x JOIN last_update t ON t.k = x.k", True),
        ("WITH x (k) AS (VALUES (1)) UPDATE t SET k = 2 FROM x", False),
        ("WITH x (k) AS (VALUES (1)) INSERT INTO t SELECT k FROM x", False),
        ("WITH x (k) AS (VALUES (1)) SELECT k FROM x FOR UPDATE", False),
        ("WITHOUT", False),
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
    # Pages of 500 rows: three statements, not 1,200.
    txn.flush()
    sent = bytes(txn._cursor.query)
    assert sent.count(b"INSERT INTO kv") == 3 and sent.count(b"),(") == 1197, sent[:200]
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
    txn.flush()
    conn.commit()
    read = Txn(conn.cursor(), engine)
    assert read.select("SELECT COUNT(*), SUM(n) FROM kv") == [(1202, 1200 * 7 + 1)]
    assert read.select("SELECT v FROM kv WHERE k IN (5, 1200, 2000, 3000) ORDER BY k") == [
        ("it's 5%",), ("it's 1200%",), ("new",), ("b",)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("sql", "multi"),
    [
        ("INSERT INTO t (a, b) VALUES (?, ?)", ("INSERT INTO t (a, b) VALUES ", "(?, ?)", "")),
        ("insert into t values (?, 0) ON CONFLICT (a) DO NOTHING",
         ("insert into t values ", "(?, 0)", " ON CONFLICT (a) DO NOTHING")),
        ("INSERT INTO t VALUES (?, '%s')", ("INSERT INTO t VALUES ", "(?, '%s')", "")),
        ("INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO UPDATE SET a = excluded.a", None),
        ("INSERT INTO t (a) VALUES (?) ON CONFLICT (a) WHERE b = ? DO NOTHING", None),
        ("UPDATE t SET a = ? WHERE b = ?", None),
        ("INSERT INTO t (a) SELECT a FROM u WHERE b = ?", None),
        ("INSERT INTO t (a) VALUES (lower(?))", None),  # a call in the row: left alone
    ],
)  # fmt: skip
def test_which_batches_become_multi_row_inserts(
    sql: str, multi: tuple[str, str, str] | None
) -> None:
    assert _as_multi_row_insert(sql) == multi


def _prepared(conn: Any) -> list[str]:
    cur = conn.cursor()
    cur.execute("SELECT statement FROM pg_prepared_statements ORDER BY prepare_time")
    return [row[0] for row in cur.fetchall()]


def test_a_repeated_plain_read_is_prepared_and_answers_the_same(
    pg: tuple[PostgresEngine, Any],
) -> None:
    engine, conn = pg
    txn = Txn(conn.cursor(), engine)
    txn.execute("INSERT INTO kv (k, v, n) VALUES (?, ?, ?)", (1, "it's 100%", 7))
    txn.flush()
    conn.commit()
    sql = "SELECT v, n FROM kv WHERE k = ? AND v LIKE '%' || ?"
    sent = []
    for _ in range(8):
        txn = Txn(conn.cursor(), engine)
        assert txn.select(sql, (1, "100%")) == [("it's 100%", 7)]
        sent.append(bytes(txn._cursor.query))
    assert _prepared(conn) == [
        "PREPARE hs_1 AS SELECT v, n FROM kv WHERE k = $1 AND v LIKE '%' || $2"
    ]
    assert sent[0].startswith(b"SELECT") and sent[1:] == [b"EXECUTE hs_1 (1, '100%')"] * 7
    # Seen once: not prepared (a one-off text costs no extra round trip).
    Txn(conn.cursor(), engine).select("SELECT k FROM kv WHERE n = ?", (7,))
    assert len(_prepared(conn)) == 1


def test_a_read_that_cannot_be_prepared_still_runs(pg: tuple[PostgresEngine, Any]) -> None:
    engine, conn = pg
    sql = "SELECT COUNT(*) FROM kv WHERE ? IS NULL"  # $1 has no type PostgreSQL can infer
    for _ in range(3):
        txn = Txn(conn.cursor(), engine)
        assert txn.select(sql, (None,)) == [(0,)]
        assert not in_transaction(conn)
    assert _prepared(conn) == []


def test_reads_inside_a_transaction_are_not_prepared(pg: tuple[PostgresEngine, Any]) -> None:
    engine, conn = pg
    for k in range(3):
        txn = Txn(conn.cursor(), engine)
        txn.execute("INSERT INTO t (k) VALUES (?)", (k,))
        assert txn.select("SELECT COUNT(*) FROM t WHERE k <= ?", (k,)) == [(k + 1,)]
        conn.commit()
    assert _prepared(conn) == []


def test_each_connection_keeps_a_bounded_number_prepared(
    pg: tuple[PostgresEngine, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from homeserver.storage import prepared

    monkeypatch.setattr(prepared, "MAX_PREPARED", 2)
    engine, conn = pg
    for n in range(4):
        for _ in range(3):
            assert Txn(conn.cursor(), engine).select(f"SELECT {n} + ?", (1,)) == [(n + 1,)]
    assert _prepared(conn) == ["PREPARE hs_3 AS SELECT 2 + $1", "PREPARE hs_4 AS SELECT 3 + $1"]
    assert Txn(conn.cursor(), engine).select("SELECT 0 + ?", (1,)) == [(1,)]


def test_prepared_statements_can_be_turned_off(pg: tuple[PostgresEngine, Any]) -> None:
    import psycopg2

    _, conn = pg
    engine = PostgresEngine(dict(conn.get_dsn_parameters()), 1, 1, prepare=False)
    plain = psycopg2.connect(**engine.connection_kwargs())
    engine.on_new_connection(plain)
    try:
        for _ in range(3):
            assert Txn(plain.cursor(), engine).select("SELECT ? + 1", (1,)) == [(2,)]
        assert _prepared(plain) == []
        # Behind a pooler a session setting would reach one server connection only: here
        # psycopg2 names the isolation level with every transaction.
        assert plain.isolation_level == psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED
    finally:
        plain.close()


def test_write_transactions_run_read_committed_with_no_extra_round_trip(
    pg: tuple[PostgresEngine, Any],
) -> None:
    import psycopg2

    engine, conn = pg
    # Even on a database whose default is stricter.
    conn.cursor().execute(
        f"ALTER DATABASE {conn.get_dsn_parameters()['dbname']} "
        "SET default_transaction_isolation TO 'serializable'"
    )
    fresh = psycopg2.connect(**engine.connection_kwargs())
    try:
        engine.on_new_connection(fresh)
        seen = []
        for k in range(2):
            txn = Txn(fresh.cursor(), engine)
            txn.execute("INSERT INTO t (k) VALUES (?)", (k,))
            seen.append(txn.select("SHOW transaction_isolation")[0][0])
            fresh.commit()
        assert seen == ["read committed", "read committed"]
        # psycopg2 knows no isolation level of its own for the session, so it starts each
        # transaction with a bare BEGIN instead of re-sending one first.
        assert fresh.isolation_level is None
    finally:
        fresh.close()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT a FROM t WHERE k IN (?, ?,?)", ("SELECT a FROM t WHERE k = ANY(?)", ((0, 3),))),
        ("SELECT a FROM t WHERE n = ? AND k NOT IN (?) AND v in (?, ?) LIMIT ?",
         ("SELECT a FROM t WHERE n = ? AND k <> ALL(?) AND v = ANY(?) LIMIT ?", ((1, 1), (2, 2)))),
        ("SELECT a FROM t JOIN (SELECT ? AS k) u ON u.k = t.k", None),
        ("SELECT a FROM t WHERE (a, b) IN ((?, ?), (?, ?))", None),
        ("SELECT a FROM t WHERE k IN (SELECT k FROM u WHERE v = ?)", None),
    ],
)  # fmt: skip
def test_in_lists_become_arrays_on_postgresql(
    sql: str, expected: tuple[str, tuple[tuple[int, int], ...]] | None
) -> None:
    assert _in_lists_as_arrays(sql) == (expected or (sql, ()))


def test_in_lists_of_every_length_share_one_prepared_statement(
    pg: tuple[PostgresEngine, Any],
) -> None:
    engine, conn = pg
    txn = Txn(conn.cursor(), engine)
    txn.execute_many(
        "INSERT INTO kv (k, v, n) VALUES (?, ?, ?)", [(k, f"v{k}", k % 3) for k in range(10)]
    )
    txn.flush()
    conn.commit()
    for length in range(1, 6):
        keys = list(range(0, 2 * length, 2))
        sql = f"SELECT k FROM kv WHERE n <> ? AND k IN ({', '.join('?' * length)}) ORDER BY k"
        expected = [(k,) for k in keys if k % 3 != 1]
        for _ in range(2):
            assert Txn(conn.cursor(), engine).select(sql, (1, *keys)) == expected
    not_in = "SELECT COUNT(*) FROM kv WHERE k NOT IN (?, ?, ?)"
    for _ in range(2):
        assert Txn(conn.cursor(), engine).select(not_in, (1, 2, 3)) == [(7,)]
    # Inside a transaction too (unprepared, as arrays).
    txn = Txn(conn.cursor(), engine)
    txn.execute("DELETE FROM kv WHERE v IN (?, ?)", ("v1", "v2"))
    assert txn.rowcount == 2
    conn.rollback()
    assert _prepared(conn) == [
        "PREPARE hs_1 AS SELECT k FROM kv WHERE n <> $1 AND k = ANY($2) ORDER BY k",
        "PREPARE hs_2 AS SELECT COUNT(*) FROM kv WHERE k <> ALL($1)",
    ]


def test_a_transactions_statements_go_together_and_answer_as_the_last(
    pg: tuple[PostgresEngine, Any],
) -> None:
    engine, conn = pg
    txn = Txn(conn.cursor(), engine)
    txn.execute("INSERT INTO kv (k, v, n) VALUES (?, ?, ?)", (1, "a;b", 1))
    txn.execute("INSERT INTO kv (k, v, n) VALUES (?, ?, ?)", (2, "it's 50%", 1))
    txn.execute("UPDATE kv SET n = n + 1 WHERE k IN (?, ?)", (1, 2))
    assert txn._held, "held back until something needs an answer"
    assert txn.rowcount == 2
    sent = bytes(txn._cursor.query)
    assert sent.count(b";") == 3 and sent.startswith(b"INSERT"), sent
    txn.execute("DELETE FROM kv WHERE k = ? RETURNING v", (2,))
    assert txn.fetchall() == [("it's 50%",)]
    txn.execute("INSERT INTO t (k) VALUES (?)", (9,))
    assert txn.select("SELECT COUNT(*), SUM(n) FROM kv") == [(1, 2)]  # the read sends it too
    txn.execute("INSERT INTO t (k) VALUES (?)", (10,))
    txn.flush()
    conn.commit()
    assert Txn(conn.cursor(), engine).select("SELECT k FROM t ORDER BY k") == [(9,), (10,)]


def test_a_failing_statement_in_a_batch_fails_the_transaction(
    pg: tuple[PostgresEngine, Any],
) -> None:
    import psycopg2

    engine, conn = pg
    txn = Txn(conn.cursor(), engine)
    txn.execute("INSERT INTO t (k) VALUES (?)", (1,))
    txn.execute("INSERT INTO t (k) VALUES (?)", (1,))
    txn.execute("INSERT INTO t (k) VALUES (?)", (2,))
    with pytest.raises(psycopg2.IntegrityError):
        txn.flush()
    conn.rollback()
    assert Txn(conn.cursor(), engine).select("SELECT COUNT(*) FROM t") == [(0,)]


def test_a_large_batch_is_sent_before_it_grows_past_a_mebibyte(
    pg: tuple[PostgresEngine, Any],
) -> None:
    engine, conn = pg
    txn = Txn(conn.cursor(), engine)
    big = "x" * 100_000
    for k in range(15):
        txn.execute("INSERT INTO kv (k, v, n) VALUES (?, ?, 0)", (k, big))
    assert 0 < len(txn._held) < 15 and txn._held_bytes <= 1 << 20, "the first ones went"
    txn.flush()
    conn.commit()
    assert Txn(conn.cursor(), engine).select("SELECT COUNT(*) FROM kv") == [(15,)]
