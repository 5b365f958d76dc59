"""Server-side prepared statements for PostgreSQL's repeated plain reads.

Most of what a woken sync costs inside PostgreSQL is planning, not execution (a membership
query: 0.24 ms planning against 0.04 ms running). A statement prepared once per
connection is parsed once, and after its first executions PostgreSQL keeps a generic plan
when that costs no more than planning each time (``plan_cache_mode = auto``).

Only plain reads outside a transaction are prepared: a PREPARE that fails (a parameter
whose type PostgreSQL cannot infer) then aborts nothing, and the statement simply runs
unprepared from then on. A text is prepared the second time a connection sees it, so the
one-off texts (IN lists of unusual lengths) cost no extra round trip, and each connection
keeps at most ``MAX_PREPARED`` of them, deallocating the least recently used.

A prepared statement's parameters take the types PostgreSQL inferred at PREPARE (a float
compared with a bigint column is rounded to it, not compared as a float), so stores pass
values of their columns' types, as they do today.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any

import psycopg2
import psycopg2.extensions

# A prepared statement costs its PostgreSQL backend ~45 KiB once it holds a generic plan
# (measured with pg_backend_memory_contexts): at most ~11 MiB per connection. The hot
# paths use a few dozen texts per connection.
MAX_PREPARED = 256
# Texts seen once are remembered up to this many, then forgotten all at once.
MAX_SEEN = 10_000


class PreparedStatements:
    """One connection's prepared statements, by the portable ``?`` text they stand for."""

    def __init__(self) -> None:
        self._names: OrderedDict[str, str] = OrderedDict()
        self._seen: set[str] = set()
        self._refused: set[str] = set()
        self._counter = 0

    def statement_for(self, cursor: Any, sql: str, count: int) -> str | None:
        """The EXECUTE to send for the plain read ``sql`` with ``count`` parameters
        (preparing it on ``cursor``, autocommitting, if due); None to send it as it is."""
        name = self._names.get(sql)
        if name is not None:
            self._names.move_to_end(sql)
        elif sql in self._seen and sql not in self._refused:
            name = self._prepare(cursor, sql)
        else:
            if len(self._seen) >= MAX_SEEN:
                self._seen.clear()
            self._seen.add(sql)
        return None if name is None else _execute_text(name, count)

    def _prepare(self, cursor: Any, sql: str) -> str | None:
        self._counter += 1
        name = f"hs_{self._counter}"
        try:
            cursor.execute(f"PREPARE {name} AS {_numbered(sql)}")
        except psycopg2.ProgrammingError:
            # Most likely a parameter of no inferable type: the text runs unprepared.
            self._refused.add(sql)
            return None
        self._seen.discard(sql)
        self._names[sql] = name
        if len(self._names) > MAX_PREPARED:
            _, oldest = self._names.popitem(last=False)
            cursor.execute(f"DEALLOCATE {oldest}")
        return name


class PreparingConnection(psycopg2.extensions.connection):
    """A psycopg2 connection carrying its prepared statements (they live as long as it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statements = PreparedStatements()


@functools.lru_cache(maxsize=5_000)
def _numbered(sql: str) -> str:
    """``?`` placeholders as ``$1``, ``$2``, ... (store SQL has no ``?`` inside literals)."""
    parts = sql.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]


@functools.lru_cache(maxsize=5_000)
def _execute_text(name: str, count: int) -> str:
    return f"EXECUTE {name} ({', '.join(['%s'] * count)})" if count else f"EXECUTE {name}"
