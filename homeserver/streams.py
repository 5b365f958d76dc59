"""Stream positions: each kind of change gets a monotonically increasing id.

An id is handed out before its transaction runs, and only counts as persisted
once every smaller id has finished, so a reader at ``current`` never skips a
change that commits late.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class StreamIdGenerator:
    def __init__(self, current: int) -> None:
        self._last_allocated = current
        self._in_flight: set[int] = set()

    @contextmanager
    def next_id(self) -> Iterator[int]:
        self._last_allocated += 1
        stream_id = self._last_allocated
        self._in_flight.add(stream_id)
        try:
            yield stream_id
        finally:
            self._in_flight.discard(stream_id)

    @property
    def current(self) -> int:
        """The highest position up to which every change has finished."""
        if self._in_flight:
            return min(self._in_flight) - 1
        return self._last_allocated
