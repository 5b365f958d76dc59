"""Side-by-side benchmark of this homeserver against Synapse, in one run, on one machine.

    python -m scripts.bench [--quick] [--db sqlite|postgres|both] [--rounds N]

Synapse (``matrix-synapse`` from PyPI) is installed into ``bench-data/synapse-venv`` on
first use. Both servers run on loopback with equivalent settings (same database kind,
rate limits off, bcrypt cost 12), and each scenario runs against both, alternating
A/B/A/B, from one asyncio load generator. Reported per scenario and server: operations
per second, p50/p95/p99 latency, server CPU milliseconds per operation (from /proc, with
the PostgreSQL server's CPU added), resident memory after start and at peak; and the
ratio ours/Synapse for each figure. Results go to a JSON file and a printed table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml

JsonBody = dict[str, Any]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(ROOT, "bench-data")
SYNAPSE_VENV = os.path.join(BENCH_DIR, "synapse-venv")
PG = {"host": "127.0.0.1", "port": 5432, "dbname": "test"}
PASSWORD = "bench-password-1234"
BCRYPT_ROUNDS = 12
# Both servers get it, so the benchmark can make an admin and, through the admin API, the
# members of large rooms without hashing a password for each.
SHARED_SECRET = "bench-shared-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Scenarios the issue tracker names that need features not built yet: reported as skipped.
NOT_YET_BUILT: dict[str, str] = {}


# Process measurements from /proc


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int, peak: bool = False) -> float:
    key = "VmHWM:" if peak else "VmRSS:"
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return 0.0


def postgres_cpu_seconds(database: str) -> float:
    """CPU of the PostgreSQL backends connected to ``database`` (one server's queries, not
    the other server's running at the same time, nor PostgreSQL's shared background
    writers), and of the parallel workers their queries started."""
    titles: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="ascii") as f:
                if f.read().strip() not in ("postgres", "postmaster"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                titles[int(entry)] = f.read().decode("utf-8", "replace").replace("\0", " ")
        except (OSError, ValueError):
            continue
    # A backend's title: "postgres: 15/main: USER DATABASE HOST(PORT) STATE"; a parallel
    # worker's: "postgres: 15/main: parallel worker for PID LEADER".
    ours = {pid for pid, title in titles.items() if database in title.split()}
    if not ours:
        raise RuntimeError(
            f"no PostgreSQL backend of {database} found (is update_process_title off?)"
        )
    for pid, title in titles.items():
        words = title.split()
        if "parallel" in words and words[-1].isdigit() and int(words[-1]) in ours:
            ours.add(pid)
    total = 0.0
    for pid in ours:
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            continue  # ended since
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_pg_database() -> str:
    import psycopg2

    name = "bench_" + secrets.token_hex(6)
    conn = psycopg2.connect(**PG)
    conn.autocommit = True
    conn.cursor().execute(
        f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    )
    conn.close()
    return name


def drop_pg_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(**PG)
    conn.autocommit = True
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


def postgres_reachable() -> bool:
    try:
        import psycopg2

        psycopg2.connect(connect_timeout=3, **PG).close()
        return True
    except Exception:
        return False


# The two servers


@dataclass
class Server:
    name: str
    db_kind: str
    directory: str
    port: int
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    pg_database: str | None = None
    process: subprocess.Popen[bytes] | None = None
    rss_after_start: float = 0.0
    metrics_port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = open(os.path.join(self.directory, "stdout.log"), "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command,
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + 180
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited; see {self.directory}/stdout.log")
                try:
                    async with http.get(self.base_url + "/_matrix/client/versions") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError(f"{self.name} did not start in time")
        await asyncio.sleep(1)  # let start-up work settle before measuring memory
        self.rss_after_start = rss_mib(self.process.pid)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu(self) -> float:
        """Seconds of CPU of this server's process and of its own database's backends."""
        own = cpu_seconds(self.pid)
        return own + (postgres_cpu_seconds(self.pg_database) if self.pg_database else 0.0)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.pg_database:
            drop_pg_database(self.pg_database)
        shutil.rmtree(self.directory, ignore_errors=True)


def ours(
    db_kind: str, cache_factor: float | None = None, cache_sizes: dict[str, int] | None = None
) -> Server:
    directory = tempfile.mkdtemp(prefix="bench-ours-")
    port = free_port()
    from crypto.signing_keys import ensure_signing_key

    ensure_signing_key(os.path.join(directory, "signing.key"))
    pg_database = create_pg_database() if db_kind == "postgres" else None
    database: dict[str, Any] = (
        {"name": "sqlite", "args": {"database": "homeserver.db"}}
        if pg_database is None
        else {
            "name": "postgres",
            "args": {"host": PG["host"], "port": PG["port"], "dbname": pg_database},
        }
    )
    metrics_port = free_port()
    config = {
        "server_name": "bench.local",
        "signing_key_path": "signing.key",
        "listeners": [
            {"port": port, "bind_addresses": ["127.0.0.1"], "resources": ["client", "admin"]},
            {"port": metrics_port, "bind_addresses": ["127.0.0.1"], "resources": ["metrics"]},
        ],
        "database": database,
        "registration": {
            "enabled": True,
            "password_min_length": 0,
            "shared_secret": SHARED_SECRET,
        },
        "password_hashing": {"bcrypt_rounds": BCRYPT_ROUNDS},
        "rate_limiting": {"enabled": False},
        # Set-up makes the members of large rooms through the admin API's log-in-as.
        "admin": {"allow_login_as": True},
        "logging": {"level": "WARNING", "access_log": False},
    }
    caches: dict[str, Any] = {}
    if cache_factor is not None:
        caches["global_factor"] = cache_factor
    if cache_sizes:
        caches["sizes"] = cache_sizes
    if caches:
        config["caches"] = caches
    with open(os.path.join(directory, "homeserver.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    return Server(
        "ours",
        db_kind,
        directory,
        port,
        [sys.executable, "-m", "homeserver", "-c", "homeserver.yaml"],
        env={"PYTHONPATH": ROOT},
        pg_database=pg_database,
        metrics_port=metrics_port,
    )


def ensure_synapse() -> str:
    python = os.path.join(SYNAPSE_VENV, "bin", "python")
    probe = [python, "-c", "import synapse, psycopg2"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print("Installing Synapse into", SYNAPSE_VENV, "(first run only)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", SYNAPSE_VENV], check=True)
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "matrix-synapse", "psycopg2"], check=True
    )
    return python


def synapse(db_kind: str) -> Server:
    python = ensure_synapse()
    directory = tempfile.mkdtemp(prefix="bench-synapse-")
    port = free_port()
    config_path = os.path.join(directory, "homeserver.yaml")
    subprocess.run(
        [
            python, "-m", "synapse.app.homeserver", "--generate-config",
            "--server-name", "bench.local", "--config-path", config_path,
            "--data-directory", directory, "--report-stats=no",
        ],
        check=True,
        capture_output=True,
        cwd=directory,
    )  # fmt: skip
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    pg_database = create_pg_database() if db_kind == "postgres" else None
    unlimited = {"per_second": 100000, "burst_count": 100000}
    config.update(
        {
            "listeners": [
                {
                    "port": port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "registration_shared_secret": SHARED_SECRET,
            "bcrypt_rounds": BCRYPT_ROUNDS,
            "rc_message": unlimited,
            "rc_registration": unlimited,
            "rc_login": {"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
            "rc_joins": {"local": unlimited, "remote": unlimited},
            "rc_joins_per_room": unlimited,
            "rc_room_creation": unlimited,
            "rc_presence": {"per_user": unlimited},
            "rc_key_requests": unlimited,
            "rc_media_create": unlimited,
            "rc_reports": unlimited,
            "rc_invites": {"per_room": unlimited, "per_user": unlimited},
            "rc_admin_redaction": unlimited,
            "rc_3pid_validation": unlimited,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "report_stats": False,
            "presence": {"enabled": False},
            # Simplified sliding sync (MSC4186): on by default in recent releases.
            "experimental_features": {"msc3575_enabled": True},
        }
    )
    if pg_database is not None:
        config["database"] = {
            "name": "psycopg2",
            "args": {"host": PG["host"], "port": PG["port"], "dbname": pg_database},
        }
    log_config = config.get("log_config")
    if log_config and os.path.exists(log_config):
        with open(log_config, encoding="utf-8") as f:
            logging_yaml = yaml.safe_load(f)
        logging_yaml.setdefault("root", {})["level"] = "WARNING"
        for logger_config in logging_yaml.get("loggers", {}).values():
            logger_config["level"] = "WARNING"
        with open(log_config, "w", encoding="utf-8") as f:
            yaml.safe_dump(logging_yaml, f)
    with open(config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    return Server(
        "synapse",
        db_kind,
        directory,
        port,
        [python, "-m", "synapse.app.homeserver", "--config-path", config_path],
        pg_database=pg_database,
    )


# The load generator


@dataclass
class LargeRoom:
    """A public room grown member by member, shared by the scenarios that need a large room
    (built once per server, not once per round)."""

    room_id: str
    tokens: list[str]


class Api:
    def __init__(self, http: aiohttp.ClientSession, server: Server) -> None:
        self.http = http
        self.base = server.base_url + "/_matrix/client/v3/"
        self.server_base = server.base_url
        self._admin_token: str | None = None
        self._large_room: LargeRoom | None = None

    async def admin_call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        """A call under /_synapse/admin/ (the admin API both servers speak)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = self.server_base + "/_synapse/admin/" + path
        async with self.http.request(method, url, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def admin_token(self) -> str:
        """An admin, registered with the shared secret (once per server)."""
        if self._admin_token is None:
            status, result = await self.admin_call("GET", "v1/register")
            if status != 200:
                raise RuntimeError(f"shared-secret nonce: {status} {result}")
            nonce, username = result["nonce"], "benchadmin" + secrets.token_hex(3)
            message = "\x00".join([nonce, username, PASSWORD, "admin"]).encode()
            mac = hmac.new(SHARED_SECRET.encode(), message, hashlib.sha1).hexdigest()
            body = {"nonce": nonce, "username": username, "password": PASSWORD, "admin": True,
                    "mac": mac}  # fmt: skip
            status, result = await self.admin_call("POST", "v1/register", body)
            if status != 200:
                raise RuntimeError(f"shared-secret registration: {status} {result}")
            self._admin_token = str(result["access_token"])
        return self._admin_token

    async def quick_users(self, count: int, prefix: str) -> list[str]:
        """``count`` users without passwords, each with an access token from the admin API's
        log-in-as (set-up for large rooms: no password hash per member)."""
        admin = await self.admin_token()
        _, who = await self.call("GET", "account/whoami", None, admin)
        server_name = str(who["user_id"]).split(":", 1)[1]

        async def one(i: int) -> str:
            user_id = quote(f"@{prefix}_{i}:{server_name}")
            status, result = await self.admin_call("PUT", f"v2/users/{user_id}", {}, admin)
            if status not in (200, 201):
                raise RuntimeError(f"admin create user: {status} {result}")
            status, result = await self.admin_call("POST", f"v1/users/{user_id}/login", {}, admin)
            if status != 200:
                raise RuntimeError(f"admin log in as: {status} {result}")
            return str(result["access_token"])

        tokens: list[str] = []
        for start in range(0, count, 8):
            tokens += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 8))))
        return tokens

    async def large_room(self, members: int) -> LargeRoom:
        """The shared public room, grown to at least ``members`` members."""
        if self._large_room is None:
            creator = (await self.quick_users(1, "large" + secrets.token_hex(3)))[0]
            self._large_room = LargeRoom(await self.create_room(creator), [creator])
        room = self._large_room
        missing = members - len(room.tokens)
        if missing > 0:
            new = await self.quick_users(missing, "member" + secrets.token_hex(3))
            for start in range(0, len(new), 4):
                await asyncio.gather(*(self.join(t, room.room_id) for t in new[start : start + 4]))
            room.tokens += new
        return room

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def register(self, username: str) -> str:
        body: dict[str, Any] = {"username": username, "password": PASSWORD}
        status, flows = await self.call("POST", "register", body)
        if status != 401:
            raise RuntimeError(f"register: expected 401, got {status} {flows}")
        body["auth"] = {"type": "m.login.dummy", "session": flows["session"]}
        status, result = await self.call("POST", "register", body)
        if status != 200:
            raise RuntimeError(f"register: {status} {result}")
        return str(result["access_token"])

    async def create_room(self, token: str, preset: str = "public_chat") -> str:
        status, result = await self.call("POST", "createRoom", {"preset": preset}, token)
        if status != 200:
            raise RuntimeError(f"createRoom: {status} {result}")
        return str(result["room_id"])

    async def join(self, token: str, room_id: str) -> None:
        status, result = await self.call("POST", f"join/{quote(room_id)}", {}, token)
        if status != 200:
            raise RuntimeError(f"join: {status} {result}")

    async def send_text(self, token: str, room_id: str, body: str) -> None:
        txn = secrets.token_hex(8)
        status, result = await self.call(
            "PUT",
            f"rooms/{quote(room_id)}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": body},
            token,
        )
        if status != 200:
            raise RuntimeError(f"send: {status} {result}")

    async def sync(
        self, token: str, since: str | None = None, timeout: int = 0, nonce: str | None = None
    ) -> JsonBody:
        path = "sync?timeout=" + str(timeout) + (f"&since={quote(since)}" if since else "")
        if nonce is not None:
            # A filter that changes nothing but makes each request distinct, so that a
            # server's cache of recent identical responses does not answer it.
            unique = {"presence": {"not_types": [f"bench.nonce.{nonce}"]}}
            path += "&filter=" + quote(json.dumps(unique))
        status, result = await self.call("GET", path, None, token)
        if status != 200:
            raise RuntimeError(f"sync: {status} {result}")
        return result

    async def sliding_sync(
        self, token: str, body: JsonBody, pos: str | None = None, timeout: int = 0
    ) -> JsonBody:
        """Simplified sliding sync (MSC4186), on the unstable path clients use today."""
        url = self.base.replace("/v3/", "/unstable/org.matrix.simplified_msc3575/") + "sync"
        params = {"timeout": str(timeout), **({"pos": pos} if pos else {})}
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.post(url, json=body, params=params, headers=headers) as r:
            result = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"sliding sync: {r.status} {result}")
            return dict(result)

    async def put_account_data(self, token: str, data_type: str) -> None:
        status, who = await self.call("GET", "account/whoami", None, token)
        if status != 200:
            raise RuntimeError(f"whoami: {status} {who}")
        path = f"user/{quote(who['user_id'])}/account_data/{quote(data_type)}"
        status, result = await self.call("PUT", path, {"written": True}, token)
        if status != 200:
            raise RuntimeError(f"account data: {status} {result}")

    async def filled_rooms(self, token: str, rooms: int, messages: int) -> list[str]:
        """``rooms`` rooms with ``messages`` messages each (set-up, not measured)."""
        room_ids: list[str] = []
        for start in range(0, rooms, 4):
            batch = range(start, min(rooms, start + 4))
            room_ids += await asyncio.gather(*(self.create_room(token) for _ in batch))

        async def fill(room_id: str) -> None:
            for i in range(messages):
                await self.send_text(token, room_id, f"history {i}")

        for start in range(0, len(room_ids), 10):
            await asyncio.gather(*(fill(r) for r in room_ids[start : start + 10]))
        return room_ids

    async def users(self, count: int, prefix: str) -> list[str]:
        """Register ``count`` users through /register, 4 at a time (what the registration
        scenarios measure; other set-up uses ``quick_users``)."""
        tokens: list[str] = []
        for start in range(0, count, 4):
            batch = range(start, min(count, start + 4))
            tokens += await asyncio.gather(*(self.register(f"{prefix}_{i}") for i in batch))
        return tokens

    async def login(self, username: str) -> str:
        status, result = await self.call(
            "POST",
            "login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": username},
                "password": PASSWORD,
            },
        )
        if status != 200:
            raise RuntimeError(f"login: {status} {result}")
        return str(result["access_token"])


@dataclass
class Measurement:
    ops: int
    seconds: float
    latencies_ms: list[float]
    cpu_ms: float
    failures: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies_ms) or [0.0]

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))]

        return {
            "ops_per_s": self.ops / self.seconds if self.seconds else 0.0,
            "p50_ms": pct(50),
            "p95_ms": pct(95),
            "p99_ms": pct(99),
            "cpu_ms_per_op": self.cpu_ms / self.ops if self.ops else 0.0,
            "failures": float(self.failures),
            **self.extra,
        }


async def settle(servers: list[Server], quiet_cpu_s: float = 0.02, limit_s: float = 60.0) -> None:
    """Wait until no server is busy (each used under ``quiet_cpu_s`` of CPU, its database's
    backends included, in each of two half-seconds in a row), so that what a server still
    does after earlier work (Synapse works through its user directory and room statistics
    for a while after a large room fills) is not measured as the other's time, nor as the
    next measurement's."""
    started = time.monotonic()
    quiet = 0
    while quiet < 2 and time.monotonic() - started < limit_s:
        before = [s.cpu() for s in servers]
        await asyncio.sleep(0.5)
        calm = all(s.cpu() - b < quiet_cpu_s for s, b in zip(servers, before, strict=True))
        quiet = quiet + 1 if calm else 0
    waited = time.monotonic() - started
    if waited >= 2:
        busy = "still busy" if quiet < 2 else "settled"
        names = ", ".join(s.name for s in servers)
        print(f"    waited {waited:.0f} s for {names} to go idle ({busy})", flush=True)


async def run_concurrent(
    server: Server, count: int, concurrency: int, op: Callable[[int], Awaitable[None]]
) -> Measurement:
    """Run ``op(i)`` for i in range(count) with ``concurrency`` workers; time each call."""
    latencies: list[float] = []
    failures = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, failures
        while next_index < count:
            i = next_index
            next_index += 1
            started = time.perf_counter()
            try:
                await op(i)
            except Exception as e:
                failures += 1
                if failures <= 3:
                    print(f"    {server.name}: operation failed: {e}", flush=True)
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    await settle([server])  # what the scenario's set-up left running is not measured
    cpu_before = server.cpu()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu_ms = (server.cpu() - cpu_before) * 1000
    return Measurement(len(latencies), elapsed, latencies, cpu_ms, failures)


# Scenarios: each returns a Measurement for one server


async def scenario_register(api: Api, server: Server, size: int) -> Measurement:
    prefix = "reg" + secrets.token_hex(3)

    async def op(i: int) -> None:
        await api.register(f"{prefix}_{i}")

    return await run_concurrent(server, size, 4, op)


async def scenario_login(api: Api, server: Server, size: int) -> Measurement:
    username = "login" + secrets.token_hex(3)
    await api.register(username)

    async def op(i: int) -> None:
        await api.login(username)

    return await run_concurrent(server, size, 4, op)


async def scenario_login_burst(api: Api, server: Server, size: int) -> Measurement:
    """Latency of light authenticated requests while a burst of logins hashes passwords.

    If password hashing ran on the reactor thread, every light request would wait behind
    it. (The issue asks for a sync wake-up here; /sync is not built yet, so the probe is
    /account/whoami, the lightest authenticated request.)
    """
    username = "burst" + secrets.token_hex(3)
    token = await api.register(username)
    probe_latencies: list[float] = []
    burst_done = asyncio.Event()

    async def prober() -> None:
        while not burst_done.is_set():
            started = time.perf_counter()
            status, _ = await api.call("GET", "account/whoami", token=token)
            if status == 200:
                probe_latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.01)

    async def op(i: int) -> None:
        await api.login(username)

    probe = asyncio.create_task(prober())
    measurement = await run_concurrent(server, size, 10, op)
    burst_done.set()
    await probe
    # Report the probe's latencies: they are the figure of interest.
    measurement.latencies_ms = probe_latencies
    return measurement


async def scenario_send_one_room(api: Api, server: Server, size: int) -> Measurement:
    """10 members of one room, each sending concurrently: ``size`` messages in all."""
    tokens = await api.quick_users(10, "snd" + secrets.token_hex(3))
    room_id = await api.create_room(tokens[0])
    for token in tokens[1:]:
        await api.join(token, room_id)

    async def op(i: int) -> None:
        await api.send_text(tokens[i % 10], room_id, f"message {i}")

    return await run_concurrent(server, size, 10, op)


async def scenario_send_room_100_members(api: Api, server: Server, size: int) -> Measurement:
    """As send_one_room, in a room ten times larger (100 members, 10 of them sending)."""
    tokens = await api.quick_users(100, "big100" + secrets.token_hex(3))
    room_id = await api.create_room(tokens[0])
    for token in tokens[1:]:
        await api.join(token, room_id)

    async def op(i: int) -> None:
        await api.send_text(tokens[i % 10], room_id, f"message {i}")

    return await run_concurrent(server, size, 10, op)


async def scenario_send_room_1000_members(api: Api, server: Server, size: int) -> Measurement:
    """As send_one_room, in a room of 1,000 members (10 of them sending)."""
    room = await api.large_room(1000)

    async def op(i: int) -> None:
        await api.send_text(room.tokens[i % 10], room.room_id, f"message {i}")

    return await run_concurrent(server, size, 10, op)


async def scenario_send_50_rooms(api: Api, server: Server, size: int) -> Measurement:
    """One user sending round-robin into 50 rooms, 10 requests in flight."""
    token = (await api.quick_users(1, "many" + secrets.token_hex(3)))[0]
    room_ids = [await api.create_room(token) for _ in range(50)]

    async def op(i: int) -> None:
        await api.send_text(token, room_ids[i % 50], f"message {i}")

    return await run_concurrent(server, size, 10, op)


async def scenario_join_large_room(api: Api, server: Server, size: int) -> Measurement:
    """Joining the public room once it has ``size`` members (20 joins, one at a time, timed;
    the room grows by them, so a later round joins a slightly larger room)."""
    room = await api.large_room(size)
    late = await api.quick_users(20, "late" + secrets.token_hex(3))

    async def op(i: int) -> None:
        await api.join(late[i], room.room_id)

    measurement = await run_concurrent(server, len(late), 1, op)
    room.tokens += late
    return measurement


async def scenario_sync_wakeup(api: Api, server: Server, size: int) -> Measurement:
    """Time from a send returning to the other member's waiting /sync returning."""
    sender, reader = await api.quick_users(2, "wake" + secrets.token_hex(3))
    room_id = await api.create_room(sender)
    await api.join(reader, room_id)
    since = (await api.sync(reader))["next_batch"]
    latencies: list[float] = []
    cpu_before = server.cpu()
    started = time.perf_counter()
    for i in range(size):
        waiting = asyncio.create_task(api.sync(reader, since, timeout=30000))
        await asyncio.sleep(0.02)  # let the sync reach the server and start waiting
        await api.send_text(sender, room_id, f"wake {i}")
        sent = time.perf_counter()
        result = await waiting
        latencies.append((time.perf_counter() - sent) * 1000)
        since = result["next_batch"]
    elapsed = time.perf_counter() - started
    return Measurement(size, elapsed, latencies, (server.cpu() - cpu_before) * 1000)


async def scenario_sync_wakeup_under_writes(api: Api, server: Server, size: int) -> Measurement:
    """Time from an account-data write returning until the writer's own long-polling /sync
    delivers it, the sync started in the same moment as the write (what matrix-js-sdk does
    while setting up secret storage), while four others send 20 messages/s each in the room."""
    tokens = await api.quick_users(6, "wakew" + secrets.token_hex(3))
    readers, senders = tokens[:2], tokens[2:]
    room_id = await api.create_room(senders[0])
    for token in tokens[1:]:
        await api.join(token, room_id)
    stopping = False

    async def noise(token: str) -> None:
        # A fixed rate (20 messages/s per sender), so both servers carry the same load.
        i = 0
        while not stopping:
            started = time.perf_counter()
            await api.send_text(token, room_id, f"noise {i}")
            i += 1
            await asyncio.sleep(max(0.0, 0.05 - (time.perf_counter() - started)))

    background = [asyncio.create_task(noise(t)) for t in senders]
    latencies: list[float] = []

    async def reader(token: str, count: int) -> None:
        since = (await api.sync(token))["next_batch"]
        for i in range(count):
            marker = f"org.example.bench.{secrets.token_hex(4)}.{i}"
            polling = asyncio.create_task(api.sync(token, since, timeout=10_000))
            await api.put_account_data(token, marker)
            written = time.perf_counter()
            while True:
                result = await polling
                since = result["next_batch"]
                events = result.get("account_data", {}).get("events", [])
                if any(e.get("type") == marker for e in events):
                    break
                polling = asyncio.create_task(api.sync(token, since, timeout=10_000))
            latencies.append((time.perf_counter() - written) * 1000)

    cpu_before = server.cpu()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(reader(t, size // len(readers)) for t in readers))
    finally:
        stopping = True
        await asyncio.gather(*background, return_exceptions=True)
    elapsed = time.perf_counter() - started
    return Measurement(len(latencies), elapsed, latencies, (server.cpu() - cpu_before) * 1000)


def scenario_initial_sync(rooms: int, messages: int) -> Callable[..., Awaitable[Measurement]]:
    async def scenario(api: Api, server: Server, size: int) -> Measurement:
        token = (await api.quick_users(1, "isync" + secrets.token_hex(3)))[0]
        await api.filled_rooms(token, rooms, messages)

        async def op(i: int) -> None:
            await api.sync(token, nonce=secrets.token_hex(4))

        return await run_concurrent(server, size, 1, op)

    return scenario


async def scenario_incremental_sync(api: Api, server: Server, size: int) -> Measurement:
    """A user in ``size`` rooms; one room changes; time the incremental sync."""
    token = (await api.quick_users(1, "inc" + secrets.token_hex(3)))[0]
    room_ids = await api.filled_rooms(token, size, 1)
    since = (await api.sync(token))["next_batch"]
    repeats = 10
    latencies: list[float] = []
    cpu_total = 0.0
    started = time.perf_counter()
    for i in range(repeats):
        await api.send_text(token, room_ids[i % len(room_ids)], f"change {i}")
        cpu_before = server.cpu()
        t0 = time.perf_counter()
        result = await api.sync(token, since)
        latencies.append((time.perf_counter() - t0) * 1000)
        cpu_total += server.cpu() - cpu_before
        since = result["next_batch"]
    return Measurement(repeats, time.perf_counter() - started, latencies, cpu_total * 1000)


# Element X's room list request: the 20 most recent rooms, one event each.
SLIDING_ROOM_LIST = {
    "all_rooms": {
        "ranges": [[0, 19]],
        "timeline_limit": 1,
        "required_state": [["m.room.name", ""], ["m.room.avatar", ""], ["m.room.encryption", ""],
                           ["m.room.create", ""], ["m.room.member", "$ME"]],
    }
}  # fmt: skip
# One account in many rooms per server, shared by the two sliding sync scenarios.
_sliding_accounts: dict[int, tuple[str, list[str]]] = {}


async def _sliding_account(api: Api, server: Server, rooms: int) -> tuple[str, list[str]]:
    key = id(server)
    if key not in _sliding_accounts or len(_sliding_accounts[key][1]) != rooms:
        token = (await api.quick_users(1, "ss" + secrets.token_hex(3)))[0]
        _sliding_accounts[key] = (token, await api.filled_rooms(token, rooms, 1))
    return _sliding_accounts[key]


async def scenario_sliding_sync_first_page(api: Api, server: Server, size: int) -> Measurement:
    """A user in ``size`` rooms opens a new sliding sync connection: the first page of 20."""
    token, _ = await _sliding_account(api, server, size)

    async def op(i: int) -> None:
        body = {"conn_id": f"bench-{secrets.token_hex(4)}", "lists": SLIDING_ROOM_LIST}
        answer = await api.sliding_sync(token, body)
        if len(answer.get("rooms", {})) != 20 or answer["lists"]["all_rooms"]["count"] != size:
            raise RuntimeError(f"first page: {len(answer.get('rooms', {}))} rooms")

    return await run_concurrent(server, 20, 1, op)


async def scenario_sliding_sync_incremental(api: Api, server: Server, size: int) -> Measurement:
    """The same user, connected: one room gets a message; time the request that follows
    (which must bring that room alone)."""
    token, room_ids = await _sliding_account(api, server, size)
    body = {"conn_id": f"bench-{secrets.token_hex(4)}", "lists": SLIDING_ROOM_LIST}
    pos = (await api.sliding_sync(token, body))["pos"]
    latencies: list[float] = []
    cpu_total = 0.0
    repeats = 20
    started = time.perf_counter()
    for i in range(repeats):
        await api.send_text(token, room_ids[(i * 37) % len(room_ids)], f"change {i}")
        cpu_before = server.cpu()
        t0 = time.perf_counter()
        answer = await api.sliding_sync(token, body, pos)
        latencies.append((time.perf_counter() - t0) * 1000)
        cpu_total += server.cpu() - cpu_before
        if len(answer.get("rooms", {})) != 1:
            raise RuntimeError(f"incremental: {len(answer.get('rooms', {}))} rooms, not 1")
        pos = answer["pos"]
    return Measurement(repeats, time.perf_counter() - started, latencies, cpu_total * 1000)


def _fake_session(i: int) -> JsonBody:
    """An encrypted-looking backed-up session (the server never decrypts it anyway)."""
    from unpaddedbase64 import encode_base64

    return {
        "first_message_index": i % 7,
        "forwarded_count": 0,
        "is_verified": True,
        "session_data": {
            "ephemeral": encode_base64(os.urandom(32)),
            "ciphertext": encode_base64(os.urandom(160)),
            "mac": encode_base64(os.urandom(8)),
        },
    }


async def _backup(api: Api, token: str) -> str:
    from unpaddedbase64 import encode_base64

    status, result = await api.call(
        "POST",
        "room_keys/version",
        {
            "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
            "auth_data": {"public_key": encode_base64(os.urandom(32))},
        },
        token,
    )
    if status != 200:
        raise RuntimeError(f"create backup: {status} {result}")
    return str(result["version"])


async def scenario_key_backup_upload(api: Api, server: Server, size: int) -> Measurement:
    """Upload ``size`` sessions in batches of 100 (one batch is one operation).

    ``first_10_p50_ms`` and ``last_10_p50_ms`` show whether a batch gets slower as the
    backup grows."""
    token = (await api.quick_users(1, "kb" + secrets.token_hex(3)))[0]
    version = await _backup(api, token)
    batches = size // 100
    # Made before the clock starts: generating random test data is not the server's time.
    bodies = [
        {"rooms": {f"!room{i % 10}:bench.local": {
            "sessions": {f"s{i}_{j}": _fake_session(j) for j in range(100)}}}}
        for i in range(batches)
    ]  # fmt: skip

    async def op(i: int) -> None:
        status, result = await api.call(
            "PUT", f"room_keys/keys?version={version}", bodies[i], token
        )
        if status != 200:
            raise RuntimeError(f"upload keys: {status} {result}")

    m = await run_concurrent(server, batches, 1, op)
    if len(m.latencies_ms) >= 20:
        m.extra["first_10_p50_ms"] = statistics.median(m.latencies_ms[:10])
        m.extra["last_10_p50_ms"] = statistics.median(m.latencies_ms[-10:])
    return m


async def scenario_key_backup_download(api: Api, server: Server, size: int) -> Measurement:
    """Download every key of a backup of ``size`` sessions (one download is one operation)."""
    token = (await api.quick_users(1, "kbd" + secrets.token_hex(3)))[0]
    version = await _backup(api, token)
    for i in range(size // 100):
        rooms = {f"!r{i % 10}:bench.local": {
            "sessions": {f"s{i}_{j}": _fake_session(j) for j in range(100)}}}  # fmt: skip
        await api.call("PUT", f"room_keys/keys?version={version}", {"rooms": rooms}, token)

    async def op(i: int) -> None:
        status, result = await api.call("GET", f"room_keys/keys?version={version}", None, token)
        if status != 200 or sum(len(r["sessions"]) for r in result["rooms"].values()) != size:
            raise RuntimeError(f"download keys: {status}")

    return await run_concurrent(server, 5, 1, op)


async def scenario_one_time_keys(api: Api, server: Server, size: int) -> Measurement:
    """Upload ``size`` one-time keys in batches of 50, then claim them all with 10 concurrent
    claimers. Reported: claims per second; ``failed_claims`` counts claims that got no key,
    a key someone else also got, or an error; ``upload_ops_per_s`` the upload batches."""
    from unpaddedbase64 import encode_base64

    # Registered, not logged in as by the admin API: Synapse's log-in-as token has no
    # device, and one-time keys belong to one.
    owner = (await api.users(1, "otk" + secrets.token_hex(3)))[0]
    claimer = (await api.quick_users(1, "otc" + secrets.token_hex(3)))[0]
    status, whoami = await api.call("GET", "account/whoami", None, owner)
    user_id, device_id = whoami["user_id"], whoami["device_id"]
    started = time.perf_counter()
    for batch in range(size // 50):
        keys = {f"curve25519:k{batch:05d}{j:03d}": encode_base64(os.urandom(32)) for j in range(50)}
        status, result = await api.call("POST", "keys/upload", {"one_time_keys": keys}, owner)
        if status != 200:
            raise RuntimeError(f"keys/upload: {status} {result}")
    upload_seconds = time.perf_counter() - started
    seen: set[str] = set()
    duplicates = 0

    async def op(i: int) -> None:
        nonlocal duplicates
        body = {"one_time_keys": {user_id: {device_id: "curve25519"}}}
        status, result = await api.call("POST", "keys/claim", body, claimer)
        keys = ((result.get("one_time_keys") or {}).get(user_id) or {}).get(device_id) or {}
        if status != 200 or not keys:
            raise RuntimeError(f"claim got no key ({status})")
        key_id = next(iter(keys))
        if key_id in seen:
            duplicates += 1
            raise RuntimeError(f"key {key_id} handed out twice")
        seen.add(key_id)

    m = await run_concurrent(server, size, 10, op)
    m.extra["failed_claims"] = float(m.failures)
    m.extra["upload_ops_per_s"] = (size // 50) / upload_seconds if upload_seconds else 0.0
    return m


SCENARIOS: dict[str, Callable[[Api, Server, int], Awaitable[Measurement]]] = {
    "register": scenario_register,
    "login": scenario_login,
    "whoami_during_login_burst": scenario_login_burst,
    "send_one_room": scenario_send_one_room,
    "send_room_100_members": scenario_send_room_100_members,
    "send_room_1000_members": scenario_send_room_1000_members,
    "send_50_rooms": scenario_send_50_rooms,
    "join_large_room": scenario_join_large_room,
    "sync_wakeup": scenario_sync_wakeup,
    "sync_wakeup_under_writes": scenario_sync_wakeup_under_writes,
    "initial_sync_20_rooms": scenario_initial_sync(20, 50),
    "initial_sync_200_rooms": scenario_initial_sync(200, 50),
    "incremental_sync_1_changed": scenario_incremental_sync,
    "key_backup_upload": scenario_key_backup_upload,
    "key_backup_download": scenario_key_backup_download,
    "one_time_keys_claim": scenario_one_time_keys,
    "sliding_sync_first_page": scenario_sliding_sync_first_page,
    "sliding_sync_incremental_1_changed": scenario_sliding_sync_incremental,
}
SIZES_FULL = {
    "register": 40,
    "login": 40,
    "whoami_during_login_burst": 30,
    "send_one_room": 1000,
    "send_room_100_members": 1000,
    "send_room_1000_members": 300,
    "send_50_rooms": 1000,
    "join_large_room": 2000,
    "sync_wakeup": 50,
    "sync_wakeup_under_writes": 200,
    # Twenty: the median of five syncs of a few milliseconds moved with the machine.
    "initial_sync_20_rooms": 20,
    "initial_sync_200_rooms": 3,
    "incremental_sync_1_changed": 500,
    "key_backup_upload": 10_000,
    "key_backup_download": 10_000,
    # Synapse refuses more than 500 one-time keys per device and algorithm.
    "one_time_keys_claim": 500,
    "sliding_sync_first_page": 1000,
    "sliding_sync_incremental_1_changed": 1000,
}
SIZES_QUICK = {
    "register": 12,
    "login": 12,
    "whoami_during_login_burst": 10,
    "send_one_room": 200,
    "send_50_rooms": 200,
    "join_large_room": 30,
    "sync_wakeup": 20,
    "sync_wakeup_under_writes": 40,
    "initial_sync_20_rooms": 3,
    "incremental_sync_1_changed": 50,
    "key_backup_upload": 2_000,
    "key_backup_download": 2_000,
    "one_time_keys_claim": 200,
    "sliding_sync_first_page": 100,
    "sliding_sync_incremental_1_changed": 100,
}


Scenario = Callable[[Api, Server, int], Awaitable[Measurement]]


async def bench_database(
    db_kind: str, rounds: int, sizes: dict[str, int], scenarios: dict[str, Scenario] | None = None
) -> dict[str, Any]:
    servers = [ours(db_kind), synapse(db_kind)]
    results: dict[str, Any] = {"scenarios": {}, "memory": {}}
    try:
        for server in servers:
            print(f"[{db_kind}] starting {server.name}...", flush=True)
            await server.start()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=300)
        ) as http:
            apis = {s.name: Api(http, s) for s in servers}
            for name, scenario in (scenarios or SCENARIOS).items():
                if name not in sizes:
                    results["scenarios"][name] = {"skipped": "not in this run (--quick or --only)"}
                    continue
                per_server: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
                failed: str | None = None
                for round_index in range(rounds):
                    # Alternate the order each round: A/B, then B/A, ...
                    order = servers if round_index % 2 == 0 else list(reversed(servers))
                    for server in order:
                        try:
                            await settle(servers)
                            m = await scenario(apis[server.name], server, sizes[name])
                        except Exception as e:
                            # One server failing a scenario must not lose the whole run.
                            failed = f"{server.name}: {e}"
                            print(f"[{db_kind}] {name} failed on {failed}", flush=True)
                            break
                        per_server[server.name].append(m.summary())
                        print(
                            f"[{db_kind}] {name} round {round_index + 1} {server.name}: "
                            f"{m.summary()['ops_per_s']:.1f} ops/s, "
                            f"p50 {m.summary()['p50_ms']:.1f} ms, "
                            f"{m.summary()['cpu_ms_per_op']:.1f} CPU-ms/op",
                            flush=True,
                        )
                    if failed:
                        break
                if failed or not all(per_server.values()):
                    results["scenarios"][name] = {"skipped": f"failed ({failed})"}
                    continue
                results["scenarios"][name] = {
                    server: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                    | {"rounds": runs}
                    for server, runs in per_server.items()
                }
        for server in servers:
            results["memory"][server.name] = {
                "rss_after_start_mib": server.rss_after_start,
                "rss_peak_mib": rss_mib(server.pid, peak=True),
            }
    finally:
        for server in servers:
            server.stop()
    if scenarios is None:
        for name, reason in NOT_YET_BUILT.items():
            results["scenarios"][name] = {"skipped": reason}
    return results


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def print_table(all_results: dict[str, Any]) -> None:
    columns = ["ops_per_s", "p50_ms", "p95_ms", "p99_ms", "cpu_ms_per_op"]
    for db_kind, results in all_results["databases"].items():
        print(f"\n## {db_kind}\n")
        print("| scenario | figure | ours | Synapse | ours/Synapse |")
        print("| --- | --- | ---: | ---: | ---: |")
        for name, by_server in results["scenarios"].items():
            if "skipped" in by_server:
                print(f"| {name} | skipped: {by_server['skipped']} | | | |")
                continue
            for column in columns:
                a, b = by_server["ours"][column], by_server["synapse"][column]
                print(f"| {name} | {column} | {a:.1f} | {b:.1f} | {ratio(a, b)} |")
        for figure in ("rss_after_start_mib", "rss_peak_mib"):
            a = results["memory"]["ours"][figure]
            b = results["memory"]["synapse"][figure]
            print(f"| memory | {figure} | {a:.1f} | {b:.1f} | {ratio(a, b)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a reduced run of about 2 minutes")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds per scenario")
    parser.add_argument("--output", help="where to write the JSON results")
    parser.add_argument("--only", nargs="+", help="run only these scenarios")
    parser.add_argument(
        "--soak", action="store_true", help="steady mixed load, each server in turn (soak.py)"
    )
    parser.add_argument("--minutes", type=float, default=60, help="with --soak: per server")
    parser.add_argument("--rate", type=float, default=80, help="with --soak: requests/s")
    parser.add_argument(
        "--servers", nargs="+", choices=["ours", "synapse"], default=["ours", "synapse"],
        help="with --soak: which servers, in turn",
    )  # fmt: skip
    parser.add_argument(
        "--cache-factor", type=float,
        help="with --soak: our caches.global_factor (small caches fill early in the run)",
    )  # fmt: skip
    parser.add_argument(
        "--curves", action="store_true", help="costs against room size and room count (curves.py)"
    )
    args = parser.parse_args(argv)
    if args.soak:
        from scripts.soak import run as run_soak

        db_kind = "sqlite" if args.db == "both" else args.db
        return run_soak(args.minutes, db_kind, args.rate, tuple(args.servers), args.cache_factor)

    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    if "postgres" in kinds and not postgres_reachable():
        print("PostgreSQL is not reachable at 127.0.0.1:5432; benchmarking SQLite only.")
        kinds.remove("postgres")
    if args.curves:
        from scripts.curves import run as run_curves

        return run_curves(kinds, args.rounds)
    sizes = SIZES_QUICK if args.quick else SIZES_FULL
    if args.only:
        unknown = set(args.only) - set(SCENARIOS)
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        sizes = {name: size for name, size in sizes.items() if name in args.only}
    os.makedirs(BENCH_DIR, exist_ok=True)
    all_results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "settings": {"rounds": args.rounds, "sizes": sizes, "bcrypt_rounds": BCRYPT_ROUNDS},
        "databases": {},
    }
    for db_kind in kinds:
        all_results["databases"][db_kind] = asyncio.run(bench_database(db_kind, args.rounds, sizes))
    output = args.output or os.path.join(
        BENCH_DIR, f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    with open(output, "w", encoding="utf-8") as f:
        json.dump(all_results, f, indent=2)
    print_table(all_results)
    print(f"\nResults written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
