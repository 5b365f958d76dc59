"""Stream positions: each kind of change gets a monotonically increasing id.

An id is handed out before its transaction runs, and only counts as persisted
once every smaller id has finished, so a reader at ``current`` never skips a
change that commits late.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


def parse_position(text: str) -> int | None:
    """A stream position or offset a client sent back: ASCII digits that fit in a BIGINT
    (anything else would be a 500 from the database, not a 400)."""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def parse_event_position(token: str) -> int | None:
    """The event stream position in any token a client may hold for a room's timeline: a
    pagination token ``s<position>`` (``prev_batch``, ``/messages`` ``start``/``end``) or a
    whole sync token (``next_batch``), whose first field is the event position."""
    if not token.startswith("s"):
        return None
    if "_" in token:
        try:
            return SyncToken.parse(token).events
        except ValueError:
            return None
    if token.startswith("s-"):  # history fetched from other servers sits below zero
        position = parse_position(token[2:])
        return -position if position is not None else None
    return parse_position(token[1:])


class StreamIdGenerator:
    def __init__(self, current: int) -> None:
        self._last_allocated = current
        self._in_flight: set[int] = set()
        # The highest id that finished while a smaller one was still running: its change
        # was notified before readers could see it, so they are woken again (through
        # ``on_caught_up``) once ``current`` reaches it.
        self._held_back = 0
        self.on_caught_up: Callable[[], None] | None = None

    def allocate(self) -> int:
        """The next id, in flight until ``finish``: a reader's ``current`` stays below it."""
        self._last_allocated += 1
        stream_id = self._last_allocated
        self._in_flight.add(stream_id)
        return stream_id

    def finish(self, stream_id: int) -> None:
        """The change under ``stream_id`` is written (or abandoned)."""
        self._in_flight.discard(stream_id)
        current = self.current
        if stream_id > current:
            self._held_back = max(self._held_back, stream_id)
        elif self._held_back and current >= self._held_back:
            self._held_back = 0
            if self.on_caught_up is not None:
                self.on_caught_up()

    @contextmanager
    def next_id(self) -> Iterator[int]:
        stream_id = self.allocate()
        try:
            yield stream_id
        finally:
            self.finish(stream_id)

    @property
    def current(self) -> int:
        """The highest position up to which every change has finished."""
        if self._in_flight:
            return min(self._in_flight) - 1
        return self._last_allocated


_TOKEN_FIELDS = (
    "events", "account_data", "receipts", "typing", "presence", "to_device", "device_lists",
)  # fmt: skip


class SyncToken:
    """Where a sync got to in every stream:
    ``s<events>_<account_data>_<receipts>_<typing>_<presence>_<to_device>_<device_lists>``.

    Typing and presence live only in memory, so after a restart a token's position in them
    may be ahead of the server's; it is then read as zero.
    """

    __slots__ = _TOKEN_FIELDS

    def __init__(
        self,
        events: int,
        account_data: int,
        receipts: int,
        typing: int,
        presence: int = 0,
        to_device: int = 0,
        device_lists: int = 0,
    ) -> None:
        self.events = events
        self.account_data = account_data
        self.receipts = receipts
        self.typing = typing
        self.presence = presence
        self.to_device = to_device
        self.device_lists = device_lists

    @classmethod
    def parse(cls, text: str) -> SyncToken:
        if not text.startswith("s"):
            raise ValueError("not a sync token")
        parts = text[1:].split("_")
        # Shorter tokens predate the presence and end-to-end streams.
        positions = [parse_position(p) for p in parts]
        if len(parts) not in (4, 5, len(_TOKEN_FIELDS)) or None in positions:
            raise ValueError("not a sync token")
        return cls(*(p for p in positions if p is not None))

    def __str__(self) -> str:
        return "s" + "_".join(str(getattr(self, name)) for name in _TOKEN_FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SyncToken) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))
