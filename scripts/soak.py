"""The soak: steady mixed load for a long time, against this server and then Synapse, to see
whether memory, latency and CPU per operation stay flat.

    ./scripts/run-bench --soak [--minutes 60] [--db sqlite|postgres] [--rate 80]
        [--servers ours synapse] [--cache-factor F]

40 users in 20 rooms, each with a long-polling /sync loop, and a fixed rate of requests
(messages with replies, reactions and edits, typing, receipts, to-device, one-time key
uploads and claims, key backup, small uploads, profile changes, logins and logouts, rooms
made and left, back-pagination). Each minute records RSS (anonymous memory apart), CPU,
open file descriptors, requests, errors, and p50/p95/p99 of sends and of sync wake-ups
(from a send returning to another member's sync delivering it). Writes
bench-data/soak-<time>.json and bench-data/soak-<time>.png. ``--cache-factor`` sets our
caches.global_factor, so that caches sized for a small server fill early in an hour and the
rest of the run shows whether anything else grows (the summary names the minute they were
full and the RSS growth after it).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import statistics
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from scripts.bench import (
    BENCH_DIR,
    PASSWORD,
    Api,
    Server,
    _backup,
    _fake_session,
    cpu_seconds,
    ours,
    rss_mib,
    synapse,
)

USERS = 40
ROOMS = 20
ROOMS_PER_USER = 3
FULL = 0.95  # of its capacity: a cache counted as full
JsonBody = dict[str, Any]


def anonymous_mib(pid: int) -> float:
    """Anonymous (heap-like) memory of the process, from /proc/<pid>/smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Minute:
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    sends_ms: list[float] = field(default_factory=list)
    wakeups_ms: list[float] = field(default_factory=list)


class Soak:
    def __init__(self, api: Api, server: Server, rate: float, seed: int) -> None:
        self.api = api
        self.server = server
        self.rate = rate
        self.random = random.Random(seed)
        self.minute = Minute()
        self.sent_at: dict[str, float] = {}
        self.tokens: list[str] = []
        self.user_ids: list[str] = []
        self.device_ids: list[str] = []
        self.rooms: list[str] = []
        self.members: dict[str, list[int]] = {}
        self.last_event: dict[str, str] = {}
        self.backups: dict[int, str] = {}
        self.stopping = False

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None,
                   raw: bytes | None = None) -> tuple[int, Any]:  # fmt: skip
        self.minute.requests += 1
        try:
            if raw is not None:
                url = self.server.base_url + "/_matrix/media/v3/upload"
                headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
                async with self.api.http.post(url, data=raw, headers=headers) as r:
                    status, result = r.status, await r.json(content_type=None)
            else:
                status, result = await self.api.call(method, path, body, token)
        except (TimeoutError, aiohttp.ClientError):
            status, result = 599, None
        if status >= 500 or status in (400, 404, 429):
            self.minute.errors += 1
            kind = f"{method} {path.split('/')[0].split('?')[0] or 'upload'} {status}"
            self.minute.error_kinds[kind] = self.minute.error_kinds.get(kind, 0) + 1
        return status, result

    async def cache_stats(self) -> JsonBody:
        """Size and hit rate of each cache, and the collector's pauses so far (under
        ``gc_pauses``), from the server's /metrics (ours only)."""
        if self.server.metrics_port is None:
            return {}
        url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
        try:
            async with self.api.http.get(url) as r:
                text = await r.text()
        except aiohttp.ClientError:
            return {}
        return cache_metrics(text)

    # Set-up

    async def set_up(self) -> None:
        prefix = "soak" + secrets.token_hex(3)
        self.tokens = await self.api.users(USERS, prefix)
        for token in self.tokens:
            _, who = await self.api.call("GET", "account/whoami", None, token)
            self.user_ids.append(who["user_id"])
            self.device_ids.append(who["device_id"])
        for i in range(ROOMS):
            self.rooms.append(await self.api.create_room(self.tokens[i % USERS]))
            self.members[self.rooms[-1]] = [i % USERS]
        for u in range(USERS):
            for room_id in self.random.sample(self.rooms, ROOMS_PER_USER):
                if u not in self.members[room_id]:
                    await self.api.join(self.tokens[u], room_id)
                    self.members[room_id].append(u)

    # The sync loops: wake-ups are measured here

    async def sync_loop(self, u: int) -> None:
        since = None
        token = self.tokens[u]
        while not self.stopping:
            path = "sync?timeout=30000" + (f"&since={quote(since)}" if since else "")
            try:
                status, body = await self.api.call("GET", path, None, token)
            except (TimeoutError, aiohttp.ClientError):
                self.minute.errors += 1
                await asyncio.sleep(1)
                continue
            received = time.perf_counter()
            if status != 200:
                self.minute.errors += 1
                await asyncio.sleep(1)
                continue
            if since is not None:
                for room in body.get("rooms", {}).get("join", {}).values():
                    for event in room.get("timeline", {}).get("events", []):
                        marker = (event.get("content") or {}).get("soak_marker")
                        sent = self.sent_at.get(marker) if marker else None
                        if sent is not None and event.get("sender") != self.user_ids[u]:
                            self.minute.wakeups_ms.append((received - sent) * 1000)
            since = body["next_batch"]

    # The operations

    def pick(self) -> tuple[int, str]:
        room_id = self.random.choice(self.rooms)
        return self.random.choice(self.members[room_id]), room_id

    async def op_send(self) -> None:
        u, room_id = self.pick()
        marker = secrets.token_hex(6)
        content: JsonBody = {"msgtype": "m.text", "body": f"soak {marker}", "soak_marker": marker}
        kind = self.random.random()
        parent = self.last_event.get(room_id)
        if parent and kind < 0.15:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": parent}}
        elif parent and kind < 0.25:
            content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": parent,
                                        "key": "👍"}, "soak_marker": marker}  # fmt: skip
        started = time.perf_counter()
        event_type = "m.reaction" if "key" in content.get("m.relates_to", {}) else "m.room.message"
        status, body = await self.call(
            "PUT", f"rooms/{quote(room_id)}/send/{event_type}/{secrets.token_hex(6)}",
            content, self.tokens[u],
        )  # fmt: skip
        done = time.perf_counter()
        if status == 200:
            self.sent_at[marker] = done
            self.minute.sends_ms.append((done - started) * 1000)
            if event_type == "m.room.message":
                self.last_event[room_id] = body["event_id"]

    async def op_typing(self) -> None:
        u, room_id = self.pick()
        await self.call("PUT", f"rooms/{quote(room_id)}/typing/{quote(self.user_ids[u])}",
                        {"typing": True, "timeout": 5000}, self.tokens[u])  # fmt: skip

    async def op_receipt(self) -> None:
        u, room_id = self.pick()
        event_id = self.last_event.get(room_id)
        if event_id:
            await self.call("POST", f"rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}",
                            {}, self.tokens[u])  # fmt: skip

    async def op_to_device(self) -> None:
        a, b = self.random.sample(range(USERS), 2)
        message = {"messages": {self.user_ids[b]: {"*": {"soak": secrets.token_hex(8)}}}}
        await self.call("PUT", f"sendToDevice/org.example.soak/{secrets.token_hex(6)}",
                        message, self.tokens[a])  # fmt: skip

    async def op_keys(self) -> None:
        u = self.random.randrange(USERS)
        keys = {f"signed_curve25519:{secrets.token_hex(4)}": {"key": secrets.token_hex(16)}}
        await self.call("POST", "keys/upload", {"one_time_keys": keys}, self.tokens[u])
        other = self.random.randrange(USERS)
        wanted = {self.user_ids[u]: {self.device_ids[u]: "signed_curve25519"}}
        await self.call("POST", "keys/claim", {"one_time_keys": wanted}, self.tokens[other])

    async def op_backup(self) -> None:
        u = self.random.randrange(USERS)
        version = self.backups.get(u)
        if version is None:
            self.minute.requests += 1
            version = self.backups[u] = await _backup(self.api, self.tokens[u])
        room_id = self.random.choice(self.rooms)
        session = _fake_session(self.random.randrange(1000))
        await self.call("PUT", f"room_keys/keys/{quote(room_id)}/{secrets.token_hex(8)}"
                        f"?version={version}", session, self.tokens[u])  # fmt: skip

    async def op_media(self) -> None:
        u = self.random.randrange(USERS)
        await self.call("POST", "", token=self.tokens[u], raw=os.urandom(2048))

    async def op_profile(self) -> None:
        u = self.random.randrange(USERS)
        name = {"displayname": f"Soak {secrets.token_hex(3)}"}
        await self.call("PUT", f"profile/{quote(self.user_ids[u])}/displayname", name,
                        self.tokens[u])  # fmt: skip

    async def op_login(self) -> None:
        u = self.random.randrange(USERS)
        localpart = self.user_ids[u][1:].split(":")[0]
        status, body = await self.call("POST", "login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
            "password": PASSWORD})  # fmt: skip
        if status == 200:
            await self.call("POST", "logout", {}, body["access_token"])

    async def op_room(self) -> None:
        u = self.random.randrange(USERS)
        status, body = await self.call("POST", "createRoom", {"preset": "private_chat"},
                                       self.tokens[u])  # fmt: skip
        if status == 200:
            await self.call("POST", f"rooms/{quote(body['room_id'])}/leave", {}, self.tokens[u])

    async def op_history(self) -> None:
        u, room_id = self.pick()
        await self.call("GET", f"rooms/{quote(room_id)}/messages?dir=b&limit=30",
                        None, self.tokens[u])  # fmt: skip

    OPERATIONS = (
        ("op_send", 40), ("op_typing", 10), ("op_receipt", 10), ("op_to_device", 8),
        ("op_keys", 5), ("op_backup", 5), ("op_media", 4), ("op_profile", 3),
        ("op_history", 10), ("op_login", 2), ("op_room", 3),
    )  # fmt: skip

    async def drive(self, minutes: float) -> list[JsonBody]:
        names = [n for n, _ in self.OPERATIONS]
        weights = [w for _, w in self.OPERATIONS]
        loops = [asyncio.ensure_future(self.sync_loop(u)) for u in range(USERS)]
        pending: set[asyncio.Future[None]] = set()
        series: list[JsonBody] = []
        pid = self.server.pid
        start = time.perf_counter()
        next_minute = start + 60
        cpu_mark = cpu_seconds(pid)
        interval = 1 / self.rate
        next_op = start
        while time.perf_counter() - start < minutes * 60:
            now = time.perf_counter()
            if now >= next_minute:
                cpu_now = cpu_seconds(pid)
                m = self.minute
                self.minute = Minute()
                series.append({
                    "minute": len(series) + 1, "rss_mib": rss_mib(pid),
                    "anon_mib": anonymous_mib(pid), "fds": open_fds(pid),
                    "cpu_s": cpu_now - cpu_mark, "requests": m.requests, "errors": m.errors,
                    "cpu_ms_per_request": (cpu_now - cpu_mark) * 1000 / max(1, m.requests),
                    "send_p50": pct(m.sends_ms, 50), "send_p95": pct(m.sends_ms, 95),
                    "send_p99": pct(m.sends_ms, 99), "wakeup_p50": pct(m.wakeups_ms, 50),
                    "wakeup_p95": pct(m.wakeups_ms, 95), "wakeup_p99": pct(m.wakeups_ms, 99),
                    "wakeups": len(m.wakeups_ms), "error_kinds": m.error_kinds,
                })  # fmt: skip
                series[-1]["caches"] = await self.cache_stats()
                print(f"  {self.server.name} minute {len(series)}: {json.dumps(series[-1])}",
                      flush=True)  # fmt: skip
                cpu_mark = cpu_now
                next_minute += 60
                self.sent_at = {k: v for k, v in self.sent_at.items() if v > now - 120}
            if now < next_op:
                await asyncio.sleep(min(next_op - now, 0.05))
                continue
            next_op += interval
            op = getattr(self, self.random.choices(names, weights)[0])
            task = asyncio.ensure_future(op())
            pending.add(task)
            task.add_done_callback(pending.discard)
        self.stopping = True
        await asyncio.gather(*pending, return_exceptions=True)
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        return series


async def soak_server(server: Server, minutes: float, rate: float) -> list[JsonBody]:
    await server.start()
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=400), timeout=aiohttp.ClientTimeout(total=120)
        ) as http:
            soak = Soak(Api(http, server), server, rate, seed=7)
            print(f"[soak] {server.name}: setting up {USERS} users in {ROOMS} rooms", flush=True)
            await soak.set_up()
            return await soak.drive(minutes)
    finally:
        server.stop()


def cache_metrics(text: str) -> JsonBody:
    """Size, capacity, hits and misses of each cache, and the collector's pauses so far
    (under ``gc_pauses``), from our server's /metrics text."""
    values: dict[str, dict[str, float]] = {}
    gc_pauses: dict[str, float] = {}
    for line in text.splitlines():
        for metric in ("sum", "count"):
            # Collector pauses so far, by generation (2 = full collections).
            prefix = f'homeserver_gc_pause_seconds_{metric}{{generation="'
            if line.startswith(prefix):
                generation, _, value = line[len(prefix) :].partition('"} ')
                gc_pauses[f"gen{generation}_{metric}"] = float(value)
        for metric in ("size", "capacity", "hits_total", "misses_total"):
            prefix = f'homeserver_cache_{metric}{{name="'
            if line.startswith(prefix):
                name, _, value = line[len(prefix) :].partition('"} ')
                values.setdefault(name, {})[metric] = float(value)
    stats: JsonBody = {
        name: {"size": v.get("size", 0), "capacity": v.get("capacity", 0),
               "hits": v.get("hits_total", 0), "misses": v.get("misses_total", 0)}
        for name, v in values.items()
    }  # fmt: skip
    if gc_pauses:
        stats["gc_pauses"] = gc_pauses
    return stats


def caches_full_minute(series: list[JsonBody]) -> int | None:
    """The minute from which every cache that ends the run at its capacity stays there:
    memory growth after it is not the caches filling. None when no cache filled."""

    def full(cache: JsonBody, capacity: float) -> bool:
        # A cache weighed by its values' sizes (state groups) stops just short of capacity.
        return bool(capacity) and cache.get("size", 0) >= FULL * capacity

    last = series[-1].get("caches", {})
    filled = [name for name, c in last.items() if full(c, c.get("capacity", 0))]
    if not filled:
        return None
    since = None
    for row in reversed(series):  # the start of the last stretch where all were full
        caches = row.get("caches", {})
        if not all(full(caches.get(n, {}), last[n]["capacity"]) for n in filled):
            break
        since = int(row["minute"])
    return since


def rss_growth_percent_per_hour(series: list[JsonBody], from_minute: int) -> float | None:
    """RSS growth from the end of ``from_minute`` to the end of the run, per hour."""
    start = next((r for r in series if r["minute"] == from_minute), None)
    minutes = series[-1]["minute"] - from_minute
    if start is None or minutes < 10:
        return None  # too short a stretch to call a rate
    return (series[-1]["rss_mib"] - start["rss_mib"]) / start["rss_mib"] * 100 * 60 / minutes


def summary(series: list[JsonBody]) -> JsonBody:
    """Thirds of the run compared: growth of memory and latency."""
    if len(series) < 3:
        return {}
    third = max(1, len(series) // 3)
    first, last = series[:third], series[-third:]

    def mean(rows: list[JsonBody], key: str) -> float:
        return statistics.fmean(r[key] for r in rows)

    hours = len(series) / 60
    full = caches_full_minute(series)
    unfilled = {name: c["size"] for name, c in series[-1].get("caches", {}).items()
                if c.get("capacity") and 0 < c.get("size", 0) < FULL * c["capacity"]}  # fmt: skip
    return {
        "caches_full_minute": full,
        "caches_not_full_at_end": unfilled,
        "rss_growth_percent_per_hour_after_caches_full": (
            None if full is None else rss_growth_percent_per_hour(series, full)
        ),
        "errors": sum(r["errors"] for r in series),
        "rss_growth_percent_per_hour": (series[-1]["rss_mib"] - series[third - 1]["rss_mib"])
        / series[third - 1]["rss_mib"] * 100 / max(hours * 2 / 3, 1e-9),
        "send_p99_last_over_first": mean(last, "send_p99") / max(mean(first, "send_p99"), 1e-9),
        "wakeup_p99_last_over_first": mean(last, "wakeup_p99")
        / max(mean(first, "wakeup_p99"), 1e-9),
        "cpu_ms_per_request_last_over_first": mean(last, "cpu_ms_per_request")
        / max(mean(first, "cpu_ms_per_request"), 1e-9),
    }  # fmt: skip


def plot(results: JsonBody, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [("rss_mib", "RSS (MiB)"), ("cpu_ms_per_request", "CPU ms per request"),
               ("send_p99", "send p99 (ms)"), ("wakeup_p99", "sync wake-up p99 (ms)")]  # fmt: skip
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (key, title) in zip(axes.flat, figures, strict=True):
        for name, run in results["servers"].items():
            ax.plot([r["minute"] for r in run["series"]], [r[key] for r in run["series"]],
                    label=name, marker=".")  # fmt: skip
        ax.set_title(title)
        if key.endswith("_p99"):
            ax.set_yscale("log")  # the two servers can be orders of magnitude apart
        ax.set_xlabel("minute")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Soak, {results['db']}, {results['rate']} requests/s, "
                 f"{results['minutes']} min per server")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def run(minutes: float, db_kind: str, rate: float, servers: tuple[str, ...] = ("ours", "synapse"),
        cache_factor: float | None = None) -> int:  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: JsonBody = {"date": stamp, "db": db_kind, "minutes": minutes, "rate": rate,
                         "our_cache_factor": cache_factor, "servers": {}}  # fmt: skip
    os.makedirs(BENCH_DIR, exist_ok=True)
    base = os.path.join(BENCH_DIR, f"soak-{stamp}")
    makers = {"ours": lambda kind: ours(kind, cache_factor), "synapse": synapse}
    for make in (makers[name] for name in servers):
        server = make(db_kind)
        series = asyncio.run(soak_server(server, minutes, rate))
        results["servers"][server.name] = {"series": series, "summary": summary(series)}
        # Written after each server: a two-hour run interrupted in Synapse's hour keeps ours.
        with open(base + ".json", "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        plot(results, base + ".png")
    for name, run_result in results["servers"].items():
        print(f"{name}: {json.dumps(run_result['summary'])}")
    print(f"Written {base}.json and {base}.png")
    return 0
