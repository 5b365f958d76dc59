"""Curves, not points: how each server's cost grows with the size of a room and with the
number of rooms a user is in.

    ./scripts/run-bench --curves [--db sqlite|postgres|both] [--rounds N]

Sends in rooms of 10, 100 and 1,000 members (10 of them sending, 10 requests in flight)
give events/s and server CPU per event against room size; initial syncs of a user in 20,
200 and 1,000 rooms (10 messages each) give the time of one initial sync against the
number of rooms. Both servers in the same run, as in ``scripts/bench.py``. Writes
bench-data/curves-<time>.json and bench-data/curves-<time>.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from scripts.bench import (
    BENCH_DIR,
    Scenario,
    bench_database,
    scenario_initial_sync,
    scenario_send_one_room,
    scenario_send_room_100_members,
    scenario_send_room_1000_members,
)

MEMBERS = (10, 100, 1000)
ROOMS = (20, 200, 1000)
MESSAGES_PER_ROOM = 10
SENDS = 300
INITIAL_SYNCS = 3

SEND_SCENARIOS: dict[int, Scenario] = {
    10: scenario_send_one_room,
    100: scenario_send_room_100_members,
    1000: scenario_send_room_1000_members,
}


def scenarios() -> dict[str, Scenario]:
    found = {f"send_{members}_members": SEND_SCENARIOS[members] for members in MEMBERS}
    for rooms in ROOMS:
        found[f"initial_sync_{rooms}_rooms"] = scenario_initial_sync(rooms, MESSAGES_PER_ROOM)
    return found


def sizes() -> dict[str, int]:
    return {name: SENDS if name.startswith("send") else INITIAL_SYNCS for name in scenarios()}


def points(results: dict[str, Any], prefix: str, xs: tuple[int, ...], suffix: str, key: str,
           server: str) -> tuple[list[int], list[float]]:  # fmt: skip
    """(x, figure) for the scenarios that ran to the end on ``server``."""
    found_x, found_y = [], []
    for x in xs:
        entry = results["scenarios"].get(f"{prefix}{x}{suffix}", {})
        if server in entry:
            found_x.append(x)
            found_y.append(float(entry[server][key]))
    return found_x, found_y


def plot(all_results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    panels = [
        ("send_", MEMBERS, "_members", "ops_per_s", "events/s", "room members"),
        ("send_", MEMBERS, "_members", "cpu_ms_per_op", "server CPU ms per event", "room members"),
        ("initial_sync_", ROOMS, "_rooms", "p50_ms", "initial sync p50 (ms)", "rooms"),
    ]
    databases = all_results["databases"]
    fig, axes = plt.subplots(len(databases), 3, figsize=(14, 4.2 * len(databases)), squeeze=False)
    for row, (db_kind, results) in zip(axes, databases.items(), strict=True):
        for ax, (prefix, xs, suffix, key, title, x_label) in zip(row, panels, strict=True):
            for server in ("ours", "synapse"):
                x, y = points(results, prefix, xs, suffix, key, server)
                ax.plot(x, y, marker="o", label=server)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticks(list(xs), [str(x) for x in xs])
            ax.set_title(f"{title} ({db_kind})")
            ax.set_xlabel(x_label)
            ax.grid(alpha=0.3, which="both")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def run(kinds: list[str], rounds: int) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    all_results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "settings": {"rounds": rounds, "sizes": sizes(), "messages_per_room": MESSAGES_PER_ROOM},
        "databases": {},
    }
    os.makedirs(BENCH_DIR, exist_ok=True)
    base = os.path.join(BENCH_DIR, f"curves-{stamp}")
    for db_kind in kinds:
        all_results["databases"][db_kind] = asyncio.run(
            bench_database(db_kind, rounds, sizes(), scenarios())
        )
        # Written after each database: a long run interrupted keeps what it measured.
        with open(base + ".json", "w", encoding="utf-8") as f:
            json.dump(all_results, f, indent=2)
        plot(all_results, base + ".png")
    for db_kind, results in all_results["databases"].items():
        for name, entry in results["scenarios"].items():
            if "skipped" in entry:
                print(f"[{db_kind}] {name}: {entry['skipped']}")
                continue
            ours, theirs = entry["ours"], entry["synapse"]
            print(f"[{db_kind}] {name}: ours {ours['ops_per_s']:.1f}/s "
                  f"{ours['cpu_ms_per_op']:.2f} CPU-ms p50 {ours['p50_ms']:.1f} ms; Synapse "
                  f"{theirs['ops_per_s']:.1f}/s {theirs['cpu_ms_per_op']:.2f} CPU-ms "
                  f"p50 {theirs['p50_ms']:.1f} ms")  # fmt: skip
    print(f"Written {base}.json and {base}.png")
    return 0
