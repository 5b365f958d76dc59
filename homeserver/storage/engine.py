"""One small database API over SQLite and PostgreSQL; transactions run on a thread pool.

Stores write SQL once, with ``?`` placeholders; the engine translates it for the
driver. Everything driver-specific (placeholders, connection set-up, how a script
of statements is applied) lives here and nowhere else.
"""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.enterprise import adbapi

from config.schema import DatabaseConfig
from homeserver import metrics
from homeserver.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

Row = tuple[Any, ...]


class Engine:
    """What differs between the two databases."""

    name: str
    module_name: str
    # Appended to a SELECT to lock the rows it reads until the transaction ends (SQLite has
    # one writer at a time, so it needs nothing).
    for_update = ""
    # Lock a row and let concurrent transactions take the next one instead of waiting.
    skip_locked = ""

    def convert_sql(self, sql: str) -> str:
        return sql

    def connection_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def on_new_connection(self, conn: Any) -> None:
        pass

    def start_transaction(self, conn: Any) -> None:
        """Called as each pooled transaction starts, on its connection."""

    def begin_before(self, conn: Any, sql: str) -> bool:
        """Open the transaction before ``sql`` if it is still autocommitting; True once
        it is open."""
        return True

    # Whether statements inside a transaction are held back and sent together (see Txn).
    batches_statements = False

    def execute(self, cursor: Any, sql: str, args: tuple[Any, ...], reading: bool) -> None:
        """Run one statement; ``reading``: a plain read outside any transaction."""
        cursor.execute(self.convert_sql(sql), args)

    def render(self, cursor: Any, sql: str, args: tuple[Any, ...]) -> bytes:
        """``sql`` with its arguments inlined, to be sent with others in one round trip."""
        raise NotImplementedError

    def render_many(self, cursor: Any, sql: str, rows: list[tuple[Any, ...]]) -> list[bytes]:
        raise NotImplementedError

    def execute_many(self, cursor: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
        cursor.executemany(sql, rows)

    def connect(self) -> Any:
        raise NotImplementedError

    def apply_script(self, conn: Any, script: str) -> None:
        raise NotImplementedError

    @property
    def pool_size(self) -> tuple[int, int]:
        return (1, 1)


class SqliteEngine(Engine):
    name = "sqlite"
    module_name = "sqlite3"

    def __init__(self, path: str) -> None:
        self.path = path

    def connection_kwargs(self) -> dict[str, Any]:
        # One connection on one thread: SQLite has a single writer anyway, and this
        # avoids "database is locked" errors entirely.
        return {"database": self.path, "check_same_thread": False}

    def on_new_connection(self, conn: Any) -> None:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 10000")
        # Deleted content is overwritten where that costs no extra I/O, so erased data
        # does not linger readable in the file's free space.
        conn.execute("PRAGMA secure_delete = FAST")

    def connect(self) -> Any:
        conn = sqlite3.connect(**self.connection_kwargs())
        self.on_new_connection(conn)
        return conn

    def apply_script(self, conn: Any, script: str) -> None:
        cur = conn.cursor()
        statement = ""
        for line in script.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                cur.execute(statement)
                statement = ""
        if statement.strip():
            cur.execute(statement)


class PostgresEngine(Engine):
    name = "postgres"
    module_name = "psycopg2"
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self, args: dict[str, Any], cp_min: int, cp_max: int, prepare: bool = True
    ) -> None:
        self.args = {k: v for k, v in args.items() if v is not None}
        self._pool_size = (cp_min, cp_max)
        self._prepare = prepare

    def convert_sql(self, sql: str) -> str:
        return _to_pyformat(sql)

    def connection_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.args)
        if self._prepare:
            from homeserver.storage.prepared import PreparingConnection

            kwargs["connection_factory"] = PreparingConnection
        return kwargs

    batches_statements = True

    def render(self, cursor: Any, sql: str, args: tuple[Any, ...]) -> bytes:
        sql, args = _with_arrays(sql, args)
        return bytes(cursor.mogrify(_to_pyformat(sql), args))

    def execute(self, cursor: Any, sql: str, args: tuple[Any, ...], reading: bool) -> None:
        sql, args = _with_arrays(sql, args)
        if reading and self._prepare:
            prepared = cursor.connection.statements.statement_for(cursor, sql, len(args))
            if prepared is not None:
                cursor.execute(prepared, args)
                return
        cursor.execute(_to_pyformat(sql), args)

    # Pooled connections start each transaction autocommitting, and BEGIN only before the
    # first statement that writes or locks: a transaction of plain reads is then one round
    # trip per query instead of three (BEGIN, query, COMMIT). Under READ COMMITTED each
    # statement reads its own snapshot inside a transaction or out of one, so nothing a
    # caller can observe changes; this is also what Python's sqlite3 does for SQLite.
    #
    # READ COMMITTED is set as the session's default by hand: given to psycopg2 instead, it
    # costs a "SET default_transaction_isolation" round trip on every switch out of
    # autocommit, which is every transaction that writes. Behind a transaction-mode pooler
    # (prepared statements off) a session setting reaches one server connection only, so
    # there psycopg2 re-sends it with every transaction.
    def on_new_connection(self, conn: Any) -> None:
        if not self._prepare:
            conn.set_session(isolation_level="READ COMMITTED", autocommit=True)
            return
        conn.set_session(autocommit=True)
        with conn.cursor() as cursor:
            cursor.execute(
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED"
            )

    def start_transaction(self, conn: Any) -> None:
        if not conn.autocommit:
            conn.autocommit = True  # the previous transaction has committed or rolled back

    def begin_before(self, conn: Any, sql: str) -> bool:
        if _is_plain_read(sql):
            return False
        conn.autocommit = False  # psycopg2 sends BEGIN ahead of the next statement
        return True

    def render_many(self, cursor: Any, sql: str, rows: list[tuple[Any, ...]]) -> list[bytes]:
        """``execute_many`` as statements to send with others: a single-row INSERT as
        INSERTs of up to 500 rows each (a hundred single-row INSERTs cost the server a
        hundred parses and plans: 17 ms for a key-backup batch), anything else (an upsert,
        which PostgreSQL refuses to apply twice to one row in one statement) one statement
        per row."""
        multi_row = _as_multi_row_insert(sql)
        if multi_row is None:
            statement = _to_pyformat(sql)
            return [bytes(cursor.mogrify(statement, row)) for row in rows]
        before, template, after = multi_row
        row_template = _to_pyformat(template)
        head, tail = before.encode("utf-8"), after.encode("utf-8")
        return [
            head + b",".join(cursor.mogrify(row_template, row) for row in rows[i : i + 500]) + tail
            for i in range(0, len(rows), 500)
        ]

    def connect(self) -> Any:
        """A connection for migrations: one transaction throughout, committed explicitly."""
        import psycopg2

        conn = psycopg2.connect(**self.args)
        conn.set_session(isolation_level="READ COMMITTED", autocommit=False)
        return conn

    def apply_script(self, conn: Any, script: str) -> None:
        conn.cursor().execute(script)

    @property
    def pool_size(self) -> tuple[int, int]:
        return self._pool_size


def engine_from_config(config: DatabaseConfig) -> Engine:
    if config.name == "sqlite":
        return SqliteEngine(config.sqlite.database)
    pg = config.postgres
    args = {
        "host": pg.host,
        "port": pg.port,
        "user": pg.user,
        "password": pg.password,
        "dbname": pg.dbname,
    }
    return PostgresEngine(args, pg.cp_min, pg.cp_max, pg.prepared_statements)


# Statements held back beyond this many bytes are sent without waiting for more.
MAX_HELD_BYTES = 1 << 20


class Txn:
    """A cursor inside one transaction, speaking the portable ``?`` dialect.

    On PostgreSQL, once the transaction is open, statements are held back until something
    needs a result (a read, a fetch, ``rowcount``) or the transaction ends, and then sent in
    one round trip: persisting an event is two or three round trips instead of a dozen.
    The result of a batch is its last statement's, which is the one the caller asks about.
    A failing statement fails the batch, and with it the transaction, as it would alone.
    """

    def __init__(self, cursor: Any, engine: Engine) -> None:
        self._cursor = cursor
        self.engine = engine
        self._after_commit: list[Callable[[], None]] = []
        self._connection = cursor.connection
        engine.start_transaction(self._connection)
        self._open = False
        self._held: list[bytes] = []
        self._held_bytes = 0

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        if not self._open:
            self._open = self.engine.begin_before(self._connection, sql)
        if self._open and self.engine.batches_statements:
            self._hold([self.engine.render(self._cursor, sql, tuple(args))])
            if _is_plain_read(sql):
                self.flush()
            return
        self.engine.execute(self._cursor, sql, tuple(args), not self._open)

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if not self._open:
            self._open = self.engine.begin_before(self._connection, "")
        batch = [tuple(r) for r in rows]
        if not self.engine.batches_statements:
            self.engine.execute_many(self._cursor, self.engine.convert_sql(sql), batch)
        elif batch:
            self._hold(self.engine.render_many(self._cursor, sql, batch))

    def _hold(self, statements: list[bytes]) -> None:
        self._held.extend(statements)
        self._held_bytes += sum(len(s) for s in statements)
        if self._held_bytes > MAX_HELD_BYTES:
            self.flush()

    def flush(self) -> None:
        """Send the statements held back (the caller of a bare Txn calls this before
        committing; ``Database.run`` does it for transaction functions)."""
        if self._held:
            batch = self._held[0] if len(self._held) == 1 else b";".join(self._held)
            self._held.clear()
            self._held_bytes = 0
            self._cursor.execute(batch)

    def fetchone(self) -> Row | None:
        self.flush()
        row = self._cursor.fetchone()
        return tuple(row) if row is not None else None

    def fetchall(self) -> list[Row]:
        self.flush()
        return [tuple(r) for r in self._cursor.fetchall()]

    def select(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        self.execute(sql, args)
        return self.fetchall()

    def select_one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        self.execute(sql, args)
        return self.fetchone()

    @property
    def rowcount(self) -> int:
        self.flush()
        return int(self._cursor.rowcount)

    def call_after(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the reactor thread once the transaction has committed."""
        self._after_commit.append(callback)


class Database:
    """Runs transactions off the reactor thread and reports how long each took."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        cp_min, cp_max = engine.pool_size
        self._pool = adbapi.ConnectionPool(
            engine.module_name,
            cp_min=cp_min,
            cp_max=cp_max,
            cp_openfun=engine.on_new_connection,
            cp_reconnect=True,
            cp_noisy=False,
            **engine.connection_kwargs(),
        )

    def start(self) -> None:
        self._pool.start()

    def close(self) -> None:
        self._pool.close()

    async def run(
        self,
        name: str,
        func: Callable[Concatenate[Txn, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run ``func(txn, ...)`` in a transaction: committed on return, rolled back on raise."""
        engine = self.engine
        after: list[Callable[[], None]] = []

        def interaction(adb_txn: Any) -> R:
            started = time.perf_counter()
            txn = Txn(adb_txn, engine)
            try:
                result = func(txn, *args, **kwargs)
                txn.flush()
                return result
            finally:
                after.extend(txn._after_commit)
                metrics.DB_TXN_SECONDS.labels(name).observe(time.perf_counter() - started)

        try:
            result: R = await self._pool.runInteraction(interaction)
        except ValueError as e:
            if "NUL (0x00)" not in str(e):
                raise
            # PostgreSQL's text holds no NUL character (SQLite's does): the client's input
            # is refused, as it would be on any server on PostgreSQL, not a 500.
            raise MatrixError(
                400, Codes.INVALID_PARAM, "Text containing NUL characters cannot be stored"
            ) from None
        for callback in after:
            callback()
        return result


@functools.lru_cache(maxsize=5_000)
def _to_pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg2's ``%s`` (bounded: queries with IN lists of every
    length are distinct texts; thread-safe, as the database threads call it)."""
    return sql.replace("%", "%%").replace("?", "%s")


_ONE_ROW_OF_VALUES = re.compile(r"\bVALUES\s*(\([^()]*\))", re.IGNORECASE)


@functools.lru_cache(maxsize=1_000)
def _as_multi_row_insert(sql: str) -> tuple[str, str, str] | None:
    """A single-row ``INSERT ... VALUES (?, ...) ...`` as (the text before the row, the row,
    the text after it), for many rows rendered into one statement; None for any other
    statement, and for one with a placeholder outside its row. An upsert (``DO UPDATE``)
    stays one row per statement: PostgreSQL refuses a statement that updates the same row
    twice, which a batch with a repeated key would ask for."""
    if sql.lstrip()[:6].upper() != "INSERT" or re.search(r"\bDO\s+UPDATE\b", sql, re.I):
        return None
    rows = list(_ONE_ROW_OF_VALUES.finditer(sql))
    if len(rows) != 1:
        return None
    row = rows[0]
    before, after = sql[: row.start(1)], sql[row.end(1) :]
    if "?" in before or "?" in after:
        return None
    return before, row.group(1), after


_IN_LIST = re.compile(r"\b(NOT\s+)?IN\s*\(\s*\?(?:\s*,\s*\?)*\s*\)", re.IGNORECASE)


@functools.lru_cache(maxsize=5_000)
def _in_lists_as_arrays(sql: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """``x IN (?, ?, ...)`` as ``x = ANY(?)`` (and NOT IN as ``<> ALL(?)``), for PostgreSQL:
    one text for lists of every length, so PostgreSQL parses and plans it once instead of
    once per length (a sync's transaction-ID lookup of 400 events: 1.1 ms, mostly
    planning). The values must have the column's type (ints for an integer column): an
    array takes its elements' type, where literals in a list were coerced to the column's.
    Returns the text and, per list, (index of its first argument, length)."""
    parts: list[str] = []
    lists: list[tuple[int, int]] = []
    end = 0
    for match in _IN_LIST.finditer(sql):
        parts.append(sql[end : match.start()])
        lists.append((sql.count("?", 0, match.start()), match.group(0).count("?")))
        parts.append("<> ALL(?)" if match.group(1) else "= ANY(?)")
        end = match.end()
    if not lists:
        return sql, ()
    parts.append(sql[end:])
    return "".join(parts), tuple(lists)


def _with_arrays(sql: str, args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """The statement and its arguments with every IN list as an array."""
    sql, lists = _in_lists_as_arrays(sql)
    return (sql, _collapse_lists(args, lists)) if lists else (sql, args)


def _collapse_lists(args: tuple[Any, ...], lists: tuple[tuple[int, int], ...]) -> tuple[Any, ...]:
    """The arguments with each IN list's run of values as one list (an array for psycopg2)."""
    collapsed: list[Any] = []
    taken = 0
    for first, length in lists:
        collapsed.extend(args[taken:first])
        collapsed.append(list(args[first : first + length]))
        taken = first + length
    collapsed.extend(args[taken:])
    return tuple(collapsed)


_LOCKING_CLAUSE = re.compile(r"\bFOR\s+(UPDATE|SHARE|NO\s+KEY|KEY)\b", re.IGNORECASE)
_WRITING_WORD = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=5_000)
def _is_plain_read(sql: str) -> bool:
    """A SELECT (or a WITH ... SELECT) that neither writes nor locks rows (so it needs no
    open transaction)."""
    start = sql.lstrip()[:6].upper()
    if start == "SELECT":
        return not _LOCKING_CLAUSE.search(sql)
    if start[:4] == "WITH" and start[4:5].isspace():
        return not _LOCKING_CLAUSE.search(sql) and not _WRITING_WORD.search(sql)
    return False


def escape_like(value: str) -> str:
    """`value` as a literal inside a LIKE pattern written with ESCAPE '\\'."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
