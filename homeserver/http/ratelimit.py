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
        self._updates = 0
        # Per-user exceptions to the message limit an admin set: user -> (rate, burst);
        # a rate of 0 means no limit.
        self.overrides: dict[str, tuple[float, int]] = {}

    def _limit(self, action: str) -> RateLimit:
        limit = getattr(self.config, action)
        assert isinstance(limit, RateLimit)
        return limit

    def _refilled(self, action: str, key: str) -> tuple[float, float, RateLimit]:
        """The bucket's tokens now, the time now, and the action's limit."""
        limit = self._limit(action)
        override = self.overrides.get(key) if action == "message" else None
        if override is not None:
            limit = RateLimit(per_second=override[0] or 1e9, burst_count=override[1] or 10**9)
        now = self.clock.time_msec() / 1000
        tokens, last = self._buckets.get((action, key), (float(limit.burst_count), now))
        return min(float(limit.burst_count), tokens + (now - last) * limit.per_second), now, limit

    def _store(self, action: str, key: str, tokens: float, now: float) -> None:
        self._buckets[(action, key)] = (tokens, now)
        self._updates += 1
        if self._updates % self._PRUNE_EVERY == 0:
            self._prune(now)

    def check(self, action: str, key: str, consume: bool = True) -> None:
        """Take a token from the bucket (or only look, with ``consume=False``); 429 if empty."""
        if not self.config.enabled:
            return
        tokens, now, limit = self._refilled(action, key)
        if tokens < 1:
            self._store(action, key, tokens, now)
            raise limit_exceeded(int((1 - tokens) / limit.per_second * 1000) + 1)
        self._store(action, key, tokens - 1 if consume else tokens, now)

    def take(self, action: str, key: str) -> None:
        """Take a token without refusing: for work already done (it delays the next request)."""
        if not self.config.enabled:
            return
        tokens, now, _ = self._refilled(action, key)
        self._store(action, key, tokens - 1, now)

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled completely: they hold no information."""
        full = [
            k
            for k, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self._limit(k[0]).per_second >= self._limit(k[0]).burst_count
        ]
        for k in full:
            del self._buckets[k]
