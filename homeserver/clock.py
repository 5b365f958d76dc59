"""Time and timers, behind one object so that tests can substitute a fake reactor."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import task

logger = logging.getLogger(__name__)


class Clock:
    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def time_msec(self) -> int:
        return int(self._reactor.seconds() * 1000)

    def monotonic(self) -> float:
        return time.monotonic()

    def looping_call(self, func: Callable[[], Any], interval_ms: int) -> task.LoopingCall:
        call = task.LoopingCall(func)
        call.clock = self._reactor
        call.start(interval_ms / 1000, now=False)
        return call

    def every(self, interval_ms: int, job: Callable[[], Awaitable[Any]]) -> task.LoopingCall:
        """Run a background job every ``interval_ms`` (never two at once); a failing run is
        logged and the next one still comes."""

        async def run() -> None:
            try:
                await job()
            except Exception:
                logger.exception("Background job %s failed", getattr(job, "__qualname__", job))

        return self.looping_call(run, interval_ms)

    def call_later(self, delay_ms: int, func: Callable[..., Any], *args: Any) -> Any:
        return self._reactor.callLater(delay_ms / 1000, func, *args)
