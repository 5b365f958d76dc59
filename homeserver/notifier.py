"""Wakes waiting /sync requests when something they care about moves. No polling.

A sync registers its interest (``listen``) *before* it reads the stream positions it
builds its answer from, and waits on that same registration. A notification that arrives
while the answer is being built is therefore never lost: the wait returns at once and the
sync looks again.

A sync that returns parks its listener under the token it handed out: the client's next
sync, from that token, takes the listener back and, if nothing was notified in between,
goes straight to waiting instead of building an answer it already knows is empty.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet import defer

from homeserver.caches import MeasuredLRU
from homeserver.clock import Clock
from homeserver.streams import StreamIdGenerator

ParkKey = tuple[str, str, str]  # (user, device, the token the sync handed out)


class Listener:
    """One sync's interest in one user's notifications, from ``listen`` until ``close``."""

    __slots__ = ("_deferred", "_notifier", "notified", "parked", "user_id")

    def __init__(self, notifier: Notifier, user_id: str) -> None:
        self._notifier = notifier
        self.user_id = user_id
        self.notified = False
        self.parked = False
        self._deferred: defer.Deferred[None] | None = None

    def fire(self) -> None:
        self.notified = True
        if self._deferred is not None and not self._deferred.called:
            self._deferred.callback(None)

    async def wait(self, timeout_ms: int) -> bool:
        """Until notified (at once if that already happened) or ``timeout_ms``; True when
        notified."""
        if self.notified or timeout_ms <= 0:
            return self.notified
        waiter: defer.Deferred[None] = defer.Deferred()
        self._deferred = waiter
        timer = self._notifier.clock.call_later(
            timeout_ms, lambda: None if waiter.called else waiter.callback(None)
        )
        try:
            await waiter
        finally:
            self._deferred = None
            if timer.active():
                timer.cancel()
        return self.notified

    def close(self) -> None:
        self._notifier._remove(self)


class _ParkedListeners(MeasuredLRU[ParkKey, Listener]):
    """Bounded: a client that stops syncing leaves one parked listener, closed when the
    least recently parked ones make room."""

    def popitem(self) -> tuple[ParkKey, Listener]:
        key, listener = super().popitem()
        listener.close()
        return key, listener


class Notifier:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._listeners: dict[str, set[Listener]] = {}
        self._parked = _ParkedListeners("parked_sync_listeners")
        # Per watched stream: (position, users) notified before the position was readable
        # (a smaller one still being written), woken again once it is.
        self._not_yet_readable: dict[int, list[tuple[int, frozenset[str]]]] = {}

    def watch(self, stream: StreamIdGenerator) -> None:
        """Changes of ``stream`` are notified with their position (``notify_users``'s
        ``stream``/``position``): when a position becomes readable only after its own
        notification, exactly its users are woken again."""
        stream.on_caught_up = lambda: self._caught_up(stream)

    def _caught_up(self, stream: StreamIdGenerator) -> None:
        pending = self._not_yet_readable.pop(id(stream), [])
        current = stream.current
        later = [(position, users) for position, users in pending if position > current]
        if later:
            self._not_yet_readable[id(stream)] = later
        self.notify_users({u for position, users in pending if position <= current for u in users})

    def listen(self, user_id: str) -> Listener:
        listener = Listener(self, user_id)
        self._listeners.setdefault(user_id, set()).add(listener)
        return listener

    def park(self, key: ParkKey, listener: Listener) -> None:
        """Keep ``listener`` (registered before the answer that handed out the token in
        ``key`` was read) for the sync that continues from that token."""
        listener.parked = True
        previous = self._parked.pop(key, None)
        if previous is not None:
            previous.close()
        self._parked[key] = listener

    def unpark(self, key: ParkKey) -> Listener | None:
        """The listener parked under ``key``, now the caller's to wait on and close."""
        listener = self._parked.pop(key, None)
        if listener is not None:
            listener.parked = False
        return listener

    def _remove(self, listener: Listener) -> None:
        listeners = self._listeners.get(listener.user_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[listener.user_id]

    def notify_users(
        self,
        user_ids: Iterable[str],
        stream: StreamIdGenerator | None = None,
        position: int | None = None,
    ) -> None:
        if stream is not None and position is not None and position > stream.current:
            user_ids = frozenset(user_ids)
            self._not_yet_readable.setdefault(id(stream), []).append((position, user_ids))
        for user_id in user_ids:
            for listener in self._listeners.pop(user_id, ()):
                listener.fire()

    def notify_all(self) -> None:
        """Wake every waiting sync: for a change whose readers are not known any more (a
        stream position that became visible only after its own notification went out)."""
        listeners, self._listeners = self._listeners, {}
        for group in listeners.values():
            for listener in group:
                listener.fire()

    def listener_count(self) -> int:
        """Syncs waiting now (parked listeners wait for no one yet)."""
        return sum(1 for group in self._listeners.values() for lis in group if not lis.parked)
