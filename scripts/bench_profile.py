"""Where one benchmark scenario's time goes, on this server alone.

    .venv/bin/python -m scripts.bench_profile SCENARIO [--size N] [--db sqlite|postgres]
        [--cprofile [--save-profile PATH]] [--cache-size NAME=N ...]
        [--after SCENARIO[=SIZE] ...]

Runs the scenario from ``scripts/bench.py`` once to warm up and once measured, and prints
the measurement and, per named database transaction, how many ran per operation and their
time inside the database thread (from the server's /metrics). With ``--cprofile`` the server
runs under cProfile and the reactor thread's busiest functions are printed too (cProfile
inflates Python-heavy code: use it to find where, the plain run to know how much).
The server's resident memory (after start, at the end, peak) and every non-empty cache's
size are printed too; ``--cache-size events=1`` runs with that cache all but off, so two
runs tell what one cache costs at the scenario's peak. ``--after`` first runs other
scenarios on the same server (unmeasured, at their benchmark size unless given), so that a
figure from the middle of ``run-bench``'s sequence can be reproduced and profiled alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import re
import shutil
import sys
import urllib.request

import aiohttp

from scripts import bench, soak

_TXN = re.compile(
    r'^homeserver_db_transaction_duration_seconds_(count|sum)\{name="([^"]+)"\} (\S+)$', re.M
)


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
        return str(resp.read().decode())


def cache_sizes(port: int) -> dict[str, int]:
    """Each non-empty cache's size (entries; room-state entries for state_groups)."""
    caches = soak.cache_metrics(_metrics(port))
    caches.pop("gc_pauses", None)
    return {name: int(c["size"]) for name, c in caches.items() if c["size"] > 0}


def transactions(port: int) -> dict[str, tuple[float, float]]:
    """(count, seconds) of each named transaction so far."""
    text = _metrics(port)
    totals: dict[str, list[float]] = {}
    for kind, name, value in _TXN.findall(text):
        totals.setdefault(name, [0.0, 0.0])[0 if kind == "count" else 1] = float(value)
    return {name: (c, s) for name, (c, s) in totals.items()}


async def profile(
    scenario: str,
    size: int,
    db_kind: str,
    use_cprofile: bool,
    save: str | None = None,
    sizes: dict[str, int] | None = None,
    first: list[tuple[str, int]] | None = None,
) -> None:
    server = bench.ours(db_kind, cache_sizes=sizes)
    out = os.path.join(server.directory, "server.prof")
    if use_cprofile:
        server.command = [sys.executable, "-m", "cProfile", "-o", out, *server.command[1:]]
    await server.start()
    assert server.metrics_port is not None
    try:
        async with aiohttp.ClientSession() as http:
            api = bench.Api(http, server)
            for earlier, earlier_size in first or []:
                await bench.SCENARIOS[earlier](api, server, earlier_size)
                print(
                    f"ran {earlier} (size {earlier_size}) first: RSS "
                    f"{bench.rss_mib(server.pid):.1f} MiB, peak "
                    f"{bench.rss_mib(server.pid, peak=True):.1f}",
                    flush=True,
                )
            run = bench.SCENARIOS[scenario]
            await run(api, server, max(1, size // 10))  # warm-up
            before = transactions(server.metrics_port)
            measurement = await run(api, server, size)
            after = transactions(server.metrics_port)
        summary = measurement.summary()
        print(scenario, db_kind, {k: round(v, 2) for k, v in summary.items()})
        rows = []
        for name, (count, seconds) in after.items():
            count0, seconds0 = before.get(name, (0.0, 0.0))
            if count > count0:
                ops = measurement.ops
                rows.append(((seconds - seconds0) * 1000 / ops, (count - count0) / ops, name))
        rows.sort(reverse=True)
        print(f"{'per op':>8} {'ms/op':>9}  transaction (time inside the database thread)")
        for ms, per_op, name in rows[:25]:
            print(f"{per_op:8.2f} {ms:9.3f}  {name}")
        print(
            f"RSS MiB: {server.rss_after_start:.1f} after start, "
            f"{bench.rss_mib(server.pid):.1f} at the end, "
            f"{bench.rss_mib(server.pid, peak=True):.1f} peak"
        )
        print("caches:", cache_sizes(server.metrics_port))
    finally:
        if use_cprofile and server.process is not None:
            server.process.terminate()  # a clean stop writes the profile
            server.process.wait(30)
            pstats.Stats(out).sort_stats("tottime").print_stats(30)
            if save:
                shutil.copyfile(out, save)
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(bench.SCENARIOS))
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--save-profile", metavar="PATH", help="with --cprofile: keep it here")
    parser.add_argument(
        "--cache-size",
        action="append",
        default=[],
        metavar="NAME=N",
        help="set caches.sizes.NAME for the server (repeatable)",
    )
    parser.add_argument(
        "--after",
        nargs="+",
        default=[],
        metavar="SCENARIO[=SIZE]",
        help="run these scenarios first, unmeasured (default size: the benchmark's)",
    )
    args = parser.parse_args()
    after = []
    for item in args.after:
        name, _, value = item.partition("=")
        if name not in bench.SCENARIOS or (value and not value.isdigit()):
            parser.error(f"--after wants SCENARIO[=SIZE], got {item!r}")
        after.append((name, int(value) if value else bench.SIZES_FULL[name]))
    sizes = {}
    for item in args.cache_size:
        name, _, value = item.partition("=")
        if not value.isdigit():
            parser.error(f"--cache-size wants NAME=N, got {item!r}")
        sizes[name] = int(value)
    asyncio.run(
        profile(args.scenario, args.size, args.db, args.cprofile, args.save_profile, sizes, after)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
