"""Numbered schema migrations, applied in order at start-up.

Files are ``migrations/NNN_name.sql`` in portable SQL; ``NNN_name.sqlite.sql`` or
``NNN_name.postgres.sql`` may stand in for one engine where the dialects differ.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from homeserver.storage.engine import Engine

logger = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(sqlite|postgres))?\.sql$")


class SchemaTooNewError(Exception):
    """The database was written by a newer server; running on it could corrupt it."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    script: str


def available_migrations(engine_name: str) -> list[Migration]:
    chosen: dict[int, tuple[str, str | None, str]] = {}
    for entry in resources.files("homeserver.storage").joinpath("migrations").iterdir():
        match = _FILE_RE.match(entry.name)
        if not match:
            continue
        version, name, only_for = int(match[1]), match[2], match[3]
        if only_for is not None and only_for != engine_name:
            continue
        current = chosen.get(version)
        # An engine-specific file wins over the portable one of the same number.
        if current is None or (current[1] is None and only_for is not None):
            chosen[version] = (name, only_for, entry.read_text(encoding="utf-8"))
    return [Migration(v, chosen[v][0], chosen[v][2]) for v in sorted(chosen)]


def _current_version(conn: Any, engine: Engine) -> int:
    cur = conn.cursor()
    cur.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE, "
        "version INTEGER NOT NULL)"
    )
    cur.execute("SELECT version FROM schema_version")
    row = cur.fetchone()
    conn.commit()
    return int(row[0]) if row else 0


def prepare_database(engine: Engine) -> int:
    """Bring the schema up to date (blocking; called once before the reactor starts)."""
    conn = engine.connect()
    try:
        current = _current_version(conn, engine)
        migrations = available_migrations(engine.name)
        latest = migrations[-1].version if migrations else 0
        if current > latest:
            raise SchemaTooNewError(
                f"the database schema is at version {current}, but this server only "
                f"understands up to version {latest}; run a newer server"
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            logger.info("Applying schema migration %03d_%s", migration.version, migration.name)
            if engine.name == "sqlite":
                conn.execute("BEGIN")
            engine.apply_script(conn, migration.script)
            cur = conn.cursor()
            cur.execute("DELETE FROM schema_version")
            cur.execute(
                engine.convert_sql("INSERT INTO schema_version (version) VALUES (?)"),
                (migration.version,),
            )
            conn.commit()
            current = migration.version
        return current
    finally:
        conn.close()
