"""Token-bucket rate limiting per (action, key)."""

from __future__ import annotations

from config.schema import RateLimit, RateLimitConfig
from homeserver.clock import Clock
from homeserver.errors import limit_exceeded


class Ratelimiter:
    _PRUNE_EVERY = 10_000

    def __init__(self, clock: Clock, config: RateLimitConfig) -> None:
        self.clock = clock
        self.config = config
        # (action, key) -> (tokens left, time of last refill in seconds)
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._checks = 0

    def _limit(self, action: str) -> RateLimit:
        limit = getattr(self.config, action)
        assert isinstance(limit, RateLimit)
        return limit

    def check(self, action: str, key: str, consume: bool = True) -> None:
        """Take a token from the bucket (or only look, with ``consume=False``); 429 if empty."""
        if not self.config.enabled:
            return
        limit = self._limit(action)
        now = self.clock.time_msec() / 1000
        tokens, last = self._buckets.get((action, key), (float(limit.burst_count), now))
        tokens = min(float(limit.burst_count), tokens + (now - last) * limit.per_second)
        if tokens < 1:
            self._buckets[(action, key)] = (tokens, now)
            raise limit_exceeded(int((1 - tokens) / limit.per_second * 1000) + 1)
        self._buckets[(action, key)] = (tokens - 1 if consume else tokens, now)
        self._checks += 1
        if self._checks % self._PRUNE_EVERY == 0:
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled completely: they hold no information."""
        full = [
            k
            for k, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self._limit(k[0]).per_second >= self._limit(k[0]).burst_count
        ]
        for k in full:
            del self._buckets[k]
