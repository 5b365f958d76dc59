"""Simplified sliding sync (MSC4186) driven by matrix-js-sdk's own SlidingSync, as Element Web
uses it: tests/js/sliding_sync.mjs starts a MatrixClient with ``startClient({slidingSync})``
for bob, waits for the room list, subscribes to one room with a longer timeline, then waits
in the long-poll while this test sends live messages.

Needs node and npm (tests/js/package-lock.json pins the sdk); skipped without them unless
CI=true."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Client, create_room, join
from tests.test_rooms_basic import send

JS_DIR = Path(__file__).parent / "js"
SCRIPT_TIMEOUT = 60.0
READY = "READY_FOR_LIVE"
LONG_POLL_MS = 20000
PARKED = 1.0  # seconds to let the script's long-poll reach the server and wait there


@pytest.fixture(scope="module")
def js_sdk() -> Iterator[Path]:
    """tests/js with its node_modules installed (``npm ci`` once, under a lock)."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        message = f"matrix-js-sdk test needs {' and '.join(missing)} on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    lock_path = Path(tempfile.gettempdir()) / "homeserver-tests-js-npm-ci.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (JS_DIR / "node_modules" / "matrix-js-sdk" / "package.json").exists():
            done = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=JS_DIR, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    yield JS_DIR


def run_script(js_dir: Path, config: dict[str, Any], live: list[tuple[Client, str, str]]) -> Any:
    """Run sliding_sync.mjs; send the ``live`` messages once it says it is long-polling.
    Returns its JSON result; fails with its stderr when it does not produce one."""
    proc = subprocess.Popen(
        ["node", "sliding_sync.mjs"],
        cwd=js_dir,
        env={**os.environ, "SLIDING_SYNC_TEST": json.dumps(config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr: list[str] = []
    ready = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr.append(line)
            if line.strip() == READY:
                ready.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    deadline = time.monotonic() + SCRIPT_TIMEOUT
    try:
        while not ready.is_set() and proc.poll() is None and time.monotonic() < deadline:
            ready.wait(0.1)
        if ready.is_set():
            time.sleep(PARKED)
            for sender, room_id, body in live:
                send(sender, room_id, body)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(timeout=5)
    out = proc.stdout.read().strip()
    log = "".join(stderr[-60:])
    assert out, f"sliding_sync.mjs printed nothing (exit {proc.returncode}); stderr:\n{log}"
    result = json.loads(out.splitlines()[-1])
    assert proc.returncode == 0 and not result["errors"], (
        f"exit {proc.returncode}: {json.dumps(result, indent=1)}\nstderr:\n{log}"
    )
    return result


def test_js_sdk_sliding_sync_list_subscription_and_live(
    js_sdk: Path, alice: Client, bob: Client
) -> None:
    rooms = [create_room(alice, name=f"Room {i}") for i in range(3)]
    for room_id in rooms:
        join(bob, room_id)
    older = [f"m{i}" for i in range(12)]
    for body in older:
        send(alice, rooms[1], body)
    send(alice, rooms[0], "top")  # bump order now: rooms[0], rooms[1], rooms[2] (its creation)
    live = [(alice, rooms[1], "live in subscribed room"), (alice, rooms[2], "live in listed room")]
    config = {
        "base_url": bob.base_url,
        "user_id": bob.user_id,
        "device_id": bob.device_id,
        "access_token": bob.token,
        "expected_rooms": rooms,
        "subscribe_room": rooms[1],
        "live": [{"room": room_id, "body": body} for _, room_id, body in live],
        "timeout_ms": LONG_POLL_MS,
    }
    started = time.monotonic()
    result = run_script(js_sdk, config, live)
    elapsed = time.monotonic() - started
    steps = result["steps"]
    dump = json.dumps(result, indent=1)

    # Every sliding sync request succeeded, with the sdk's extensions; no other HTTP error
    # but 404 probes: the crypto's "is there a key backup?" and unstable MSCs we lack.
    assert all(r.get("status") == 200 or r.get("error") == "AbortError"
               for r in result["sync_requests"]), dump  # fmt: skip
    assert {"to_device", "e2ee", "account_data", "typing", "receipts"} <= set(
        result["sync_requests"][0]["extensions"]), dump  # fmt: skip
    unexpected = [e for e in result["http_errors"] if not (
        e["status"] == 404 and e["method"] == "GET"
        and (e["path"].endswith("/room_keys/version") or "/unstable/" in e["path"]))]  # fmt: skip
    assert unexpected == [], dump

    # The list: every room, most recent activity first, one event each.
    listed = steps["list"]
    assert listed["count"] == 3, dump
    assert listed["order_by_bump_stamp"] == rooms, dump
    assert listed["names"] == {r: f"Room {i}" for i, r in enumerate(rooms)}, dump
    assert listed["timelines"][rooms[0]] == ["top"], dump
    assert listed["timelines"][rooms[1]] == ["m11"], dump
    assert listed["timelines"][rooms[2]] == [], dump  # bob's join is its latest event

    # The subscription: the last 10 messages, merged into the sdk's room timeline.
    subscribed = steps["subscription"]
    assert subscribed["room"] == rooms[1] and subscribed["bodies"] == older[-10:], dump
    assert subscribed["sdk_timeline"] == older[-10:], dump

    # Live: both messages through the long-poll that was waiting on the server, woken well
    # before its timeout; the list reorders.
    got = steps["live"]
    delivered = {(d["room"], b) for d in got["room_data"] for b in d["bodies"]}
    assert {(room_id, body) for _, room_id, body in live} <= delivered, dump
    # (Parked: the answering request had waited on the server before the send woke it.)
    assert PARKED * 1000 / 3 <= got["delivering_request_ms"] < LONG_POLL_MS / 2, dump
    assert got["order_by_bump_stamp"] == [rooms[2], rooms[1], rooms[0]], dump
    assert got["sdk_timelines"][rooms[1]] == [*older[-10:], live[0][2]], dump
    assert got["sdk_timelines"][rooms[2]] == [live[1][2]], dump
    assert elapsed < SCRIPT_TIMEOUT
