"""The client-version matrix: one end-to-end encryption scenario (register, cross-signing
with password UIA, secret storage, key backup, an encrypted room with two users talking
both ways, members loaded before encrypting, a new device restoring history from the
recovery key) run by every matrix-js-sdk version Element releases of the last two years
ship (Rust crypto), by matrix-nio and by mautrix-python, against a fresh server per
database.

    ./scripts/run-client-matrix [--db sqlite|postgres|both] [--only sdk34 nio ...]

Prints a table and writes bench-data/client-matrix-latest.json; exits 1 if a step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from tests.harness import make_server, postgres_available

HERE = os.path.dirname(os.path.abspath(__file__))
JS_DIR = os.path.join(HERE, "js")
ROOT = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(ROOT, "bench-data", "client-matrix-latest.json")
PY_CLIENTS = ("nio", "mautrix")


def js_aliases() -> list[str]:
    with open(os.path.join(JS_DIR, "package.json"), encoding="utf-8") as f:
        return [name for name in json.load(f)["dependencies"] if name.startswith("sdk")]


def ensure_js() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("Node.js and npm are needed for the matrix-js-sdk columns")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True)


def run_one(command: list[str], cwd: str, timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"steps": {"run": f"FAIL: no answer within {timeout:.0f} s"}}
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"steps": {"run": "FAIL: " + " | ".join(tail)}}
    result: dict[str, Any] = json.loads(lines[-1])
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def run_matrix(db_kind: str, clients: list[str]) -> dict[str, Any]:
    server = make_server(db_kind, {"rate_limiting": {"enabled": False}})
    server.start()
    try:
        results: dict[str, Any] = {}
        for client in clients:
            print(f"[{db_kind}] {client}...", flush=True)
            if client in PY_CLIENTS:
                command = [sys.executable, "-m", "scripts.client_matrix.py_clients", client,
                           server.base_url]  # fmt: skip
                results[client] = run_one(command, ROOT, 600)
            else:
                command = ["node", "scenario.mjs", client, server.base_url]
                results[client] = run_one(command, JS_DIR, 900)
        return results
    finally:
        server.stop()


def passed(step: str) -> bool:
    return step.startswith("ok") or step.startswith("n/a")


def print_table(all_results: dict[str, dict[str, Any]]) -> None:
    for db_kind, results in all_results.items():
        print(f"\n## {db_kind}\n")
        names = list(results)
        labels = [f"{n} {results[n].get('version', '')}".strip() for n in names]
        print("| step | " + " | ".join(labels) + " |")
        print("| --- |" + " --- |" * len(names))
        steps: list[str] = []
        for result in results.values():
            steps += [s for s in result.get("steps", {}) if s not in steps]
        for step in steps:
            cells = []
            for name in names:
                value = results[name].get("steps", {}).get(step, "-")
                cells.append("ok" if value.startswith("ok") else value.split(":")[0])
            print(f"| {step} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--only", nargs="+", help="clients to run (sdk aliases, nio, mautrix)")
    args = parser.parse_args(argv)
    clients = args.only or [*js_aliases(), *PY_CLIENTS]
    if any(c not in PY_CLIENTS for c in clients):
        ensure_js()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    if "postgres" in kinds and postgres_available() is not None:
        print("PostgreSQL is not reachable; running the matrix on SQLite only.")
        kinds.remove("postgres")
    all_results = {kind: run_matrix(kind, clients) for kind in kinds}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "databases": all_results}, f, indent=1)
    print_table(all_results)
    failed = [
        (kind, client, step)
        for kind, results in all_results.items()
        for client, result in results.items()
        for step, value in result.get("steps", {}).items()
        if not passed(value)
    ]
    for kind, client, step in failed:
        print(f"FAILED: {kind} {client} {step}: {all_results[kind][client]['steps'][step]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
