"""Running real homeserver processes for tests, and a small HTTP client to talk to them.

Each server is a subprocess started with ``python -m homeserver -c FILE``, exactly as an
operator runs it, on loopback ports, with SQLite or a fresh PostgreSQL database.
"""

from __future__ import annotations

import copy
import json
import os
import random
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
import yaml

from crypto.signing_keys import ensure_signing_key

if TYPE_CHECKING:
    from homeserver.storage.engine import PostgresEngine

PG_ARGS = {"host": "127.0.0.1", "port": 5432, "dbname": "test"}
SHARED_SECRET = "test-shared-secret"
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    """A port to listen on, below the kernel's ephemeral range: a port the kernel handed
    out (port 0) can be taken again by any outbound connection (to PostgreSQL, say) before
    the server binds it, which made a server fail to start now and then."""
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(10_000, low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # the range is crowded: fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outbound connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low = int(f.read().split()[0])
        if low > 11_000:
            return low
    except (OSError, ValueError, IndexError):
        pass
    return 32_768


def postgres_available() -> str | None:
    """None if PostgreSQL answers, else the reason it does not."""
    try:
        import psycopg2

        conn = psycopg2.connect(connect_timeout=3, **PG_ARGS)
        conn.close()
        return None
    except Exception as e:  # any failure means "not available"
        return f"PostgreSQL at {PG_ARGS['host']}:{PG_ARGS['port']} is not reachable: {e}"


def create_pg_database() -> str:
    import psycopg2

    name = "hs_test_" + uuid.uuid4().hex[:12]
    conn = psycopg2.connect(**PG_ARGS)
    conn.autocommit = True
    conn.cursor().execute(
        f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    )
    conn.close()
    return name


def drop_pg_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(**PG_ARGS)
    conn.autocommit = True
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


@contextmanager
def migrated_pg_engine(prepare: bool = True) -> Iterator[PostgresEngine]:
    """An engine on a new PostgreSQL database with the schema applied, dropped after."""
    from homeserver.storage.engine import PostgresEngine
    from homeserver.storage.migrate import prepare_database

    name = create_pg_database()
    try:
        engine = PostgresEngine({**PG_ARGS, "dbname": name}, 1, 1, prepare=prepare)
        prepare_database(engine)
        yield engine
    finally:
        drop_pg_database(name)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def base_config(server_name: str, port: int, metrics_port: int) -> dict[str, Any]:
    return {
        "server_name": server_name,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "signing_key_path": "signing.key",
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "resources": ["client", "federation", "media", "admin"],
            },
            {"port": metrics_port, "bind_addresses": ["127.0.0.1"], "resources": ["metrics"]},
        ],
        "registration": {"enabled": True, "shared_secret": SHARED_SECRET},
        "password_hashing": {"bcrypt_rounds": 4},
        "rate_limiting": {"enabled": False},
        "privacy": {"client_ip_flush_interval": "200ms"},
        "logging": {"level": "INFO", "file": "homeserver.log"},
        # Everything in the tests is on loopback, push gateways included.
        "federation": {"ip_range_blacklist": []},
    }


@dataclass
class ServerProcess:
    """A running homeserver; ``stop()`` ends it and removes its database."""

    db_kind: str
    base_url: str
    metrics_url: str
    server_name: str
    directory: str
    config: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    pg_database: str | None = None
    _extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> str:
        return os.path.join(self.directory, "homeserver.yaml")

    @property
    def sqlite_path(self) -> str:
        return os.path.join(self.directory, "homeserver.db")

    def log_text(self) -> str:
        try:
            with open(os.path.join(self.directory, "homeserver.log"), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 30) -> None:
        with open(self.config_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(self.config, f)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "homeserver", "-c", self.config_path],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        output = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                output += line
                if b"homeserver: ready" in line:
                    return
                if not line and self.process.poll() is not None:
                    break
        self.stop(cleanup=False)
        raise RuntimeError(
            f"homeserver did not start:\n{output.decode(errors='replace')}\n{self.log_text()}"
        )

    def stop(self, cleanup: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if cleanup:
            if self.pg_database:
                drop_pg_database(self.pg_database)
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        self.stop(cleanup=False)
        self.start()


def make_server(db_kind: str, overrides: dict[str, Any] | None = None) -> ServerProcess:
    """Configure (but do not start) a server on free loopback ports."""
    directory = tempfile.mkdtemp(prefix="hs-test-")
    port, metrics_port = free_port(), free_port()
    server_name = f"test{secrets.token_hex(3)}.local"
    config = base_config(server_name, port, metrics_port)
    pg_database = None
    if db_kind == "postgres":
        pg_database = create_pg_database()
        config["database"] = {
            "name": "postgres",
            "args": {**{k: v for k, v in PG_ARGS.items() if k != "dbname"}, "dbname": pg_database},
        }
    else:
        config["database"] = {"name": "sqlite", "args": {"database": "homeserver.db"}}
    config = deep_merge(config, overrides or {})
    ensure_signing_key(os.path.join(directory, "signing.key"))
    return ServerProcess(
        db_kind=db_kind,
        base_url=f"http://127.0.0.1:{port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}",
        server_name=server_name,
        directory=directory,
        config=config,
        pg_database=pg_database,
    )


@dataclass
class Response:
    status: int
    body: Any
    headers: Any

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body!r}>"


class Client:
    """A minimal Matrix client over ``requests``; every call returns status and JSON body."""

    def __init__(self, server: ServerProcess, token: str | None = None) -> None:
        self.server = server
        self.base_url = server.base_url
        self.session = requests.Session()
        self.token = token
        self.user_id: str | None = None
        self.device_id: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | bool | None = True,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Response:
        if not path.startswith("/"):
            path = "/_matrix/client/v3/" + path
        all_headers = dict(headers or {})
        use_token = self.token if token is True else (token or None)
        if use_token:
            all_headers["Authorization"] = f"Bearer {use_token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        resp = self.session.request(
            method, self.base_url + path, data=data, headers=all_headers, params=params, timeout=30
        )
        try:
            parsed = resp.json()
        except ValueError:
            parsed = resp.content
        return Response(resp.status_code, parsed, resp.headers)

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Response:
        return self.request("POST", path, body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> Response:
        return self.request("PUT", path, body, **kwargs)

    def delete(self, path: str, body: Any = None, **kwargs: Any) -> Response:
        return self.request("DELETE", path, body, **kwargs)

    # Account helpers

    def register(
        self, username: str | None = None, password: str = PASSWORD, **extra: Any
    ) -> Response:
        """Register through the dummy UIA flow and adopt the new session."""
        username = username or "user" + secrets.token_hex(4)
        body: dict[str, Any] = {"username": username, "password": password, **extra}
        first = self.post("register", body, token=False)
        assert first.status == 401, first
        body["auth"] = {"type": "m.login.dummy", "session": first.body["session"]}
        resp = self.post("register", body, token=False)
        if resp.status == 200 and "access_token" in resp.body:
            self.adopt(resp.body)
        return resp

    def login(self, user: str, password: str = PASSWORD, **extra: Any) -> Response:
        resp = self.post(
            "login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": password,
                **extra,
            },
            token=False,
        )
        if resp.status == 200:
            self.adopt(resp.body)
        return resp

    def adopt(self, body: dict[str, Any]) -> None:
        self.token = body["access_token"]
        self.user_id = body["user_id"]
        self.device_id = body["device_id"]

    def password_auth(self, password: str = PASSWORD, session: str | None = None) -> dict[str, Any]:
        auth: dict[str, Any] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.user_id},
            "password": password,
        }
        if session:
            auth["session"] = session
        return auth


def new_user(server: ServerProcess, username: str | None = None) -> Client:
    client = Client(server)
    resp = client.register(username)
    assert resp.status == 200, resp
    return client


# Shared helpers for tests


def q(value: str) -> str:
    """Percent-encode an ID for a URL path (event IDs may contain '/' or '+')."""
    from urllib.parse import quote

    return quote(value, safe="")


def db_rows(server: ServerProcess, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the server's own database directly, as an operator could (``?`` placeholders)."""
    return _on_database(server, sql, params, fetch=True)


def db_execute(server: ServerProcess, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Change the server's database behind its back (what a crash or a fork would leave)."""
    _on_database(server, sql, params, fetch=False)


def _on_database(
    server: ServerProcess, sql: str, params: tuple[Any, ...], fetch: bool
) -> list[tuple[Any, ...]]:
    if server.db_kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(server.sqlite_path)
        try:
            cursor = conn.execute(sql, params)
            rows = cursor.fetchall() if fetch else []
            conn.commit()
            return rows
        finally:
            conn.close()
    import psycopg2

    pg = psycopg2.connect(**{**PG_ARGS, "dbname": server.pg_database})
    try:
        cur = pg.cursor()
        cur.execute(sql.replace("?", "%s"), params)
        rows = cur.fetchall() if fetch else []
        pg.commit()
        return [tuple(r) for r in rows]
    finally:
        pg.close()


def create_room(client: Client, **body: Any) -> str:
    body.setdefault("preset", "public_chat")
    resp = client.post("createRoom", body)
    assert resp.status == 200, resp
    return str(resp.body["room_id"])


def join(client: Client, room_id: str) -> None:
    resp = client.post(f"join/{q(room_id)}", {})
    assert resp.status == 200, resp


def leave(client: Client, room_id: str) -> None:
    resp = client.post(f"rooms/{q(room_id)}/leave", {})
    assert resp.status == 200, resp
