"""Room retention (MSC1763) and the deletion of redacted content: expired messages leave
the database, state and each room's latest events stay, the server's bounds hold, and a
redacted event's original content goes after the configured period."""

from __future__ import annotations

import time
from typing import Any

from rooms.retention import max_lifetime
from tests.harness import create_room, db_rows, join, new_user, q
from tests.test_rooms_basic import send


def test_max_lifetime_within_the_servers_bounds() -> None:
    day = 86_400_000
    assert max_lifetime({"max_lifetime": day}, None, None, None) == day
    assert max_lifetime({}, 7 * day, None, None) == 7 * day  # the server default
    assert max_lifetime(None, None, None, None) is None  # kept for ever
    assert max_lifetime({"max_lifetime": 1}, None, day, None) == day  # raised to the minimum
    assert max_lifetime({"max_lifetime": 400 * day}, None, None, 365 * day) == 365 * day
    for bad in ({"max_lifetime": "1d"}, {"max_lifetime": -5}, {"max_lifetime": True}):
        assert max_lifetime(bad, 2 * day, None, None) == 2 * day


def stored(server: Any, event_id: str) -> str | None:
    rows = db_rows(server, "SELECT json FROM events WHERE event_id = ?", (event_id,))
    return str(rows[0][0]) if rows else None


def wait_until(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.2)


def test_expired_messages_are_purged_and_rooms_keep_working(server_factory: Any) -> None:
    server = server_factory({"retention": {
        "enabled": True, "purge_interval": "300ms", "allowed_lifetime_min": "2s",
        "redaction_retention_period": "1s"}})  # fmt: skip
    alice, bob = new_user(server), new_user(server)

    def policy(lifetime: int) -> list[dict[str, Any]]:
        content = {"max_lifetime": lifetime}
        return [{"type": "m.room.retention", "state_key": "", "content": content}]

    short = create_room(alice, initial_state=policy(2000))
    kept = create_room(alice)  # no policy, no server default: kept for ever
    clamped = create_room(alice, initial_state=policy(1))
    join(bob, short)
    old = [send(alice, short, f"old {i}") for i in range(3)]
    topic = alice.put(f"rooms/{q(short)}/state/m.room.topic", {"topic": "state stays"})
    assert topic.status == 200
    in_kept = send(alice, kept, "kept for ever")
    secret = send(alice, kept, "secret words, then redacted")
    assert alice.put(f"rooms/{q(kept)}/redact/{q(secret)}/r1", {"reason": "oops"}).status == 200
    time.sleep(2.2)
    latest = send(bob, short, "the latest, after the others expired")
    wait_until(lambda: all(stored(server, e) is None for e in old))
    assert stored(server, latest) is not None
    assert stored(server, topic.body["event_id"]) is not None
    chunk = bob.get(f"rooms/{q(short)}/messages", params={"dir": "b", "limit": "50"}).body["chunk"]
    bodies = [e["content"].get("body") for e in chunk if e["type"] == "m.room.message"]
    assert "old 0" not in bodies and "the latest, after the others expired" in bodies
    state = bob.get(f"rooms/{q(short)}/state/m.room.topic")
    assert state.status == 200 and state.body["topic"] == "state stays"
    send(alice, short, "the room still works")
    # The redacted message's words leave the database; the kept room keeps its message.
    wait_until(lambda: "secret words" not in (stored(server, secret) or ""))
    assert stored(server, secret) is not None and stored(server, in_kept) is not None
    # Held at the server's minimum lifetime (2 s), not the room's 1 ms: a message (not the
    # latest, which always stays) survives several purge runs.
    fresh = send(alice, clamped, "younger than the minimum")
    send(alice, clamped, "the latest")
    time.sleep(0.9)
    assert stored(server, fresh) is not None
