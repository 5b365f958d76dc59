"""The client-matrix scenario run by Python client libraries against a running homeserver.

    python -m scripts.client_matrix.py_clients nio http://127.0.0.1:8008
    python -m scripts.client_matrix.py_clients mautrix http://127.0.0.1:8008

prints one JSON line: {"client": ..., "version": ..., "steps": {step: result}}, where each
result is "ok" (or "ok: <how the step went around the library>"), "FAIL: <reason>" or
"n/a: <why the library cannot do it>". Steps, in this order: register, cross_signing,
secret_storage, key_backup, encrypted_room, send_both_ways, members_before_encrypting,
restore_new_device. Each has a 60 s timeout. The process exits 0 when no step failed.

The server needs open registration (m.login.dummy) and no rate limiting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from importlib.metadata import PackageNotFoundError, version

from scripts.client_matrix._common import STEPS, Steps

CLIENTS = {"nio": "matrix-nio", "mautrix": "mautrix"}


def installed_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def _not_installed(distribution: str, error: ImportError) -> dict[str, str]:
    return {name: f"FAIL: {distribution} cannot be imported: {error}" for name in STEPS}


async def run_nio(base_url: str) -> dict[str, str]:
    """The scenario with matrix-nio; one result per step."""
    try:
        from scripts.client_matrix import _nio
    except ImportError as e:
        return _not_installed("matrix-nio[e2e]", e)
    steps = Steps()
    await _nio.run(base_url, steps)
    return steps.ordered()


async def run_mautrix(base_url: str) -> dict[str, str]:
    """The scenario with mautrix-python and its OlmMachine; one result per step."""
    try:
        from scripts.client_matrix import _mautrix
    except ImportError as e:
        return _not_installed("mautrix[encryption]", e)
    steps = Steps()
    await _mautrix.run(base_url, steps)
    return steps.ordered()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("base_url", help="the homeserver's base URL, e.g. http://127.0.0.1:8008")
    parser.add_argument("-v", "--verbose", action="store_true", help="library logs to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.CRITICAL,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    runner = run_nio if args.client == "nio" else run_mautrix
    results = asyncio.run(runner(args.base_url))
    distribution = CLIENTS[args.client]
    print(
        json.dumps(
            {"client": distribution, "version": installed_version(distribution), "steps": results}
        ),
        flush=True,
    )
    return 1 if any(r.startswith("FAIL") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
