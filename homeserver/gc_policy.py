"""When the garbage collector walks the whole heap: on a timer, not whenever the
interpreter's counters say so.

A collection of the oldest generation walks every live container, and most of a running
server's containers are its caches (each cached event is a tree of dicts). Under the
interpreter's default thresholds one ran about eleven times a minute at a modest steady
load (the soak at 40 requests/s), each pausing the reactor for 50 ms with empty caches and
90 ms once they were full: that pause was the sync wake-up p99. Here the young
generations stay automatic (they are cheap, and free most cyclic garbage young); the
oldest is collected every ``interval`` instead, and what is alive once the server has
started (modules, routes, configuration) is frozen out of every collection.

CPython 3.11's rule: the oldest generation is collected when the middle one has been
collected more than its threshold times (and enough new long-lived objects have come);
a threshold no count reaches switches that off.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.internet.task import LoopingCall

_NEVER = 2**31 - 1


def collect_oldest_on_a_timer(clock: Any, interval_s: float) -> LoopingCall | None:
    """Freeze what is alive now, stop automatic full collections and run one every
    ``interval_s`` seconds on ``clock`` (a reactor). ``interval_s`` 0: change nothing."""
    if interval_s <= 0:
        return None
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, _NEVER)
    loop = LoopingCall(gc.collect, 2)
    loop.clock = clock
    loop.start(interval_s, now=False)
    return loop
