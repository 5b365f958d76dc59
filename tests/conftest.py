"""Fixtures: real homeserver processes on SQLite and PostgreSQL.

Storage-backed tests run once per database. Under CI=true the PostgreSQL run is
mandatory; elsewhere it is skipped, with the reason, when no server answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.federation_harness import FederationCA, make_federating_server, make_test_ca
from tests.harness import Client, ServerProcess, make_server, new_user, postgres_available

DB_KINDS = ["sqlite", "postgres"]

# The servers the tests start run this checkout's code, whatever checkout the virtualenv's
# editable install last pointed at (a benchmark worktree sharing the virtualenv, say).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p
)


def _require_db(kind: str) -> None:
    if kind != "postgres":
        return
    reason = postgres_available()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires the PostgreSQL run: {reason}")
    pytest.skip(f"skipping the PostgreSQL run: {reason}")


@pytest.fixture(scope="session", params=DB_KINDS)
def db_kind(request: pytest.FixtureRequest) -> str:
    _require_db(request.param)
    return str(request.param)


@pytest.fixture(scope="session")
def server(db_kind: str) -> Iterator[ServerProcess]:
    """One shared server per database for tests that only need the default config."""
    proc = make_server(db_kind)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def server_factory(db_kind: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with their own configuration; stopped at the end of the test."""
    started: list[ServerProcess] = []

    def factory(overrides: dict[str, Any] | None = None, start: bool = True) -> ServerProcess:
        proc = make_server(db_kind, overrides)
        started.append(proc)
        if start:
            proc.start()
        return proc

    yield factory
    for proc in started:
        proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Client:
    """A client without a session."""
    return Client(server)


@pytest.fixture
def alice(server: ServerProcess) -> Client:
    return new_user(server)


@pytest.fixture
def bob(server: ServerProcess) -> Client:
    return new_user(server)


@pytest.fixture(scope="module")
def ca() -> FederationCA:
    """A certificate authority the federation tests' servers trust (one per module)."""
    return make_test_ca()


@pytest.fixture(scope="module")
def servers(db_kind: str, ca: FederationCA) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two federating servers over loopback TLS, shared by one test module."""
    first = make_federating_server(db_kind, ca)
    second = make_federating_server(db_kind, ca)
    first.start()
    second.start()
    yield first, second
    first.stop()
    second.stop()
