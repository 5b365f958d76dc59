"""No lost wake-ups: a change notified while a long-polling /sync is still building its
answer ends the wait at once. Deterministic: the notification is sent from inside the
build, on a fake clock that never advances, so a lost one would leave the sync hanging."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import defer, task

from homeserver.clock import Clock
from homeserver.notifier import Notifier
from homeserver.services.sync import SyncService
from homeserver.streams import StreamIdGenerator, SyncToken
from tests.harness import Client, q
from tests.test_rooms_basic import send


def make_sync_service(builds: list[tuple[dict[str, Any], bool]], on_build: Any) -> SyncService:
    reactor = task.Clock()
    notifier = Notifier(Clock(reactor))
    service = SyncService.__new__(SyncService)
    service.hs = SimpleNamespace(  # type: ignore[assignment]
        notifier=notifier,
        typing=SimpleNamespace(position=0),
        presence=SimpleNamespace(position=0),
        reactor=reactor,
    )

    async def build(*args: Any) -> tuple[dict[str, Any], bool]:
        on_build(notifier)
        return builds.pop(0)

    service._build = build  # type: ignore[method-assign]
    return service


def run_sync(service: SyncService, timeout_ms: int = 30_000) -> defer.Deferred[Any]:
    requester = SimpleNamespace(user_id="@a:test", device_id="D")
    return defer.ensureDeferred(
        service.sync(requester, SyncToken(1, 1, 1, 0), timeout_ms, False, None)  # type: ignore[arg-type]
    )


def test_notification_during_the_build_is_not_lost() -> None:
    calls = []

    def on_build(notifier: Notifier) -> None:
        calls.append(1)
        if len(calls) == 1:
            # The change lands between reading the positions and starting to wait.
            notifier.notify_users(["@a:test"])

    service = make_sync_service([({"first": True}, False), ({"second": True}, True)], on_build)
    result = run_sync(service)
    # The fake clock never moved: only a kept notification can have finished the sync.
    assert result.called, "the sync slept through a notification sent while it was building"
    assert result.result == {"second": True}
    assert len(calls) == 2
    assert service.hs.notifier.listener_count() == 0


def test_notification_for_someone_else_does_not_wake(monkeypatch: pytest.MonkeyPatch) -> None:
    def on_build(notifier: Notifier) -> None:
        notifier.notify_users(["@b:test"])

    service = make_sync_service([({}, False), ({"late": True}, False)], on_build)
    reactor = service.hs.reactor
    monkeypatch.setattr("homeserver.services.sync.time.monotonic", reactor.seconds)
    result = run_sync(service, timeout_ms=5_000)
    assert not result.called
    reactor.advance(6)
    assert result.called
    assert service.hs.notifier.listener_count() == 0


def test_held_back_stream_position_wakes_sleepers_when_it_becomes_visible() -> None:
    stream = StreamIdGenerator(0)
    caught_up: list[int] = []
    stream.on_caught_up = lambda: caught_up.append(stream.current)
    first = stream.next_id()
    second = stream.next_id()
    assert first.__enter__() == 1
    assert second.__enter__() == 2
    second.__exit__(None, None, None)  # finishes first: notified, but not yet readable
    assert stream.current == 0 and caught_up == []
    first.__exit__(None, None, None)
    assert stream.current == 2 and caught_up == [2]
    with stream.next_id():
        pass
    assert caught_up == [2]  # in-order completions need no extra wake-up


def test_position_readable_after_its_notification_wakes_exactly_its_users() -> None:
    """Sends in two rooms finish out of order: the later position is notified before a
    sync can read it, so its users are woken again once it is readable, and nobody else
    (waking every waiting sync would make each build an answer for nothing)."""
    notifier = Notifier(Clock(task.Clock()))
    stream = StreamIdGenerator(0)
    notifier.watch(stream)
    first, second = stream.next_id(), stream.next_id()
    assert (first.__enter__(), second.__enter__()) == (1, 2)
    second.__exit__(None, None, None)
    notifier.notify_users(["@b:x"], stream, 2)  # position 2, not readable yet (1 is not)
    b_again = notifier.listen("@b:x")  # b's sync saw nothing new and waits again
    a_waiting = notifier.listen("@a:x")
    first.__exit__(None, None, None)  # 1 and 2 readable now
    assert b_again.notified, "b slept through position 2"
    assert not a_waiting.notified
    notifier.notify_users(["@a:x"], stream, 1)  # 1's own notification, readable at once
    assert a_waiting.notified
    with stream.next_id() as third:
        pass
    late = notifier.listen("@b:x")
    notifier.notify_users(["@c:x"], stream, third)
    assert not late.notified  # nothing was pending any more


def test_notify_all_wakes_every_listener() -> None:
    notifier = Notifier(Clock(task.Clock()))
    listeners = [notifier.listen(user) for user in ("@a:x", "@a:x", "@b:x")]
    notifier.notify_all()
    assert all(listener.notified for listener in listeners)
    assert notifier.listener_count() == 0


def _chained_syncs(notify_between: bool) -> tuple[list[int], Any, SyncService]:
    """A first sync hands out a token; the second continues from it."""
    calls: list[int] = []
    token = str(SyncToken(5, 1, 1, 0))

    def on_build(notifier: Notifier) -> None:
        calls.append(1)

    service = make_sync_service(
        [({"next_batch": token}, True), ({"next_batch": "later"}, True)], on_build
    )
    first = run_sync(service)
    assert first.called and first.result == {"next_batch": token}
    if notify_between:
        service.hs.notifier.notify_users(["@a:test"])
    requester = SimpleNamespace(user_id="@a:test", device_id="D")
    second = defer.ensureDeferred(
        service.sync(requester, SyncToken.parse(token), 30_000, False, None)  # type: ignore[arg-type]
    )
    return calls, second, service


def test_sync_from_a_quiet_token_waits_without_building() -> None:
    calls, second, service = _chained_syncs(notify_between=False)
    assert not second.called
    assert calls == [1], "nothing was notified: the answer is known to be empty"
    assert service.hs.notifier.listener_count() == 1
    service.hs.notifier.notify_users(["@a:test"])
    assert second.called and second.result == {"next_batch": "later"}
    assert calls == [1, 1]


def test_change_between_two_syncs_is_answered_at_once() -> None:
    """Notified after the first answer was read and before the client came back: the
    parked listener remembers it, so the next sync builds at once."""
    calls, second, _ = _chained_syncs(notify_between=True)
    assert second.called and second.result == {"next_batch": "later"}
    assert calls == [1, 1]


def test_parked_listeners_are_bounded() -> None:
    notifier = Notifier(Clock(task.Clock()))
    notifier._parked = type(notifier._parked)("parked_sync_listeners", 3)
    for i in range(10):
        notifier.park(("@a:x", "D", f"s{i}"), notifier.listen("@a:x"))
    assert len(notifier._parked) == 3
    # Evicted listeners are closed, not left registered with nobody to take them back.
    assert sum(len(group) for group in notifier._listeners.values()) == 3
    assert notifier.unpark(("@a:x", "D", "s9")) is not None
    assert notifier.unpark(("@a:x", "D", "s0")) is None


def test_sync_started_with_a_write_returns_promptly(alice: Client) -> None:
    """The matrix-js-sdk pattern that made secret storage set-up take minutes: account data
    written while the next long-poll is starting."""
    token = alice.get("sync", params={"timeout": "0"}).body["next_batch"]
    for attempt in range(10):
        results: dict[str, Any] = {}

        def poll(since: str = token, results: dict[str, Any] = results) -> None:
            started = time.monotonic()
            resp = alice.get("sync", params={"since": since, "timeout": "20000"})
            results["elapsed"] = time.monotonic() - started
            results["resp"] = resp

        thread = threading.Thread(target=poll)
        thread.start()
        put = alice.put(
            f"user/{q(alice.user_id or '')}/account_data/org.example.t{attempt}", {"n": attempt}
        )
        assert put.status == 200, put
        thread.join(30)
        types = {e["type"] for e in results["resp"].body["account_data"]["events"]}
        assert f"org.example.t{attempt}" in types
        assert results["elapsed"] < 10, results["elapsed"]
        token = results["resp"].body["next_batch"]


def test_change_between_two_long_polls_comes_at_once_and_a_quiet_one_waits(
    alice: Client, bob: Client
) -> None:
    """Over HTTP, what the parked listener decides: a message sent after one sync answered
    and before the client polls again ends that poll at once; with nothing new, the poll
    from the same token waits out its timeout and answers empty."""
    room_id = alice.post("createRoom", {"preset": "public_chat"}).body["room_id"]
    assert bob.post(f"join/{q(room_id)}", {}).status == 200
    token = bob.get("sync", params={"timeout": "0"}).body["next_batch"]
    for i in range(3):
        event_id = send(alice, room_id, f"between polls {i}")
        started = time.monotonic()
        body = bob.get("sync", params={"since": token, "timeout": "20000"}).body
        assert time.monotonic() - started < 10
        timeline = body["rooms"]["join"][room_id]["timeline"]["events"]
        assert event_id in [e["event_id"] for e in timeline]
        token = body["next_batch"]
    started = time.monotonic()
    body = bob.get("sync", params={"since": token, "timeout": "1500"}).body
    assert time.monotonic() - started >= 1.4
    assert room_id not in body["rooms"]["join"]
