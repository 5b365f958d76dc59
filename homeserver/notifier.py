"""Wakes waiting /sync requests when something they care about moves. No polling."""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet import defer

from homeserver.clock import Clock


class Notifier:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._waiters: dict[str, list[defer.Deferred[None]]] = {}

    def notify_users(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            for waiter in self._waiters.pop(user_id, ()):
                if not waiter.called:
                    waiter.callback(None)

    async def wait(self, user_id: str, timeout_ms: int) -> None:
        """Return when ``user_id`` is notified or after ``timeout_ms``, whichever is first."""
        if timeout_ms <= 0:
            return
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiters.setdefault(user_id, []).append(waiter)
        timer = self.clock.call_later(
            timeout_ms, lambda: None if waiter.called else waiter.callback(None)
        )
        try:
            await waiter
        finally:
            if timer.active():
                timer.cancel()
            waiters = self._waiters.get(user_id)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[user_id]
