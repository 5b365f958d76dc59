"""Every in-memory cache of the server, bounded and measured: each has a name, a size from
the configuration (``caches.sizes.<name>``, scaled by ``caches.global_factor``), and its
size, capacity, hits, misses and evictions on /metrics."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from cachetools import LRUCache
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

K = TypeVar("K")
V = TypeVar("V")

# The default capacity of each cache (entries), sized for a small server; the operator's
# caches.sizes overrides any of them. A message costs about 1 KiB cached as stored, 1 KiB
# more once parsed; a transaction ID about 0.6 KiB.
DEFAULT_SIZES: dict[str, int] = {
    "events": 10_000,
    # Of those, the events whose parsed JSON is kept too (the others keep their stored
    # text, about as large, and are parsed again when read): enough for the events one
    # large request reads (an initial sync of 200 rooms reads about 3,400).
    "parsed_events": 5_000,
    # Room-state entries, not states: a state of N entries weighs N. A join in a
    # 2,000-member room makes a new state of 2,000 entries; counted by states, a full cache
    # of those would hold four million entries (hundreds of MiB).
    "state_groups": 200_000,
    "state_chain_lengths": 20_000,
    "joined_members": 10_000,
    # Only to answer quick retries without drafting an event: the database's unique key
    # catches every other one.
    "transaction_ids": 10_000,
    # The reverse, event ID -> the sending device's transaction (or none), for the
    # transaction_id a sync shows the sender: fixed once the event is written.
    "event_transactions": 10_000,
    "room_versions": 50_000,
    "forward_extremities": 20_000,
    "access_tokens": 50_000,
    "ignored_users": 10_000,
    "push_rules": 10_000,
    "effective_push_rules": 10_000,
    "compiled_push_rules": 10_000,
    "pushers": 10_000,
    "consent": 10_000,
    "server_keys": 5_000,
    "server_key_fetches": 5_000,
    "well_known": 4_096,
    "presence": 50_000,
    "typing_changes": 50_000,
    "sql_statements": 5_000,
    "parked_sync_listeners": 10_000,
}

_sizes: dict[str, int] = {}
_factor = 1.0


def configure(sizes: dict[str, int], factor: float) -> None:
    """Set capacities from the configuration (before the caches are built)."""
    global _factor
    _sizes.clear()
    _sizes.update(sizes)
    _factor = factor


def capacity(name: str) -> int:
    base = _sizes.get(name, DEFAULT_SIZES.get(name, 10_000))
    return max(1, int(base * _factor))


class MeasuredLRU(LRUCache[K, V], Generic[K, V]):
    """An LRU cache that counts its hits, misses and evictions. With ``weigh`` its capacity
    is in the units ``weigh`` gives each value (values heavier than the whole capacity are
    not kept), otherwise in entries."""

    def __init__(
        self, name: str, maxsize: int | None = None, weigh: Callable[[V], int] | None = None
    ) -> None:
        super().__init__(
            maxsize=maxsize if maxsize is not None else capacity(name), getsizeof=weigh
        )
        self.name = name
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        _registry[id(self)] = self

    def __getitem__(self, key: K) -> V:
        try:
            value: V = super().__getitem__(key)
        except KeyError:
            self.misses += 1
            raise
        self.hits += 1
        return value

    def __contains__(self, key: object) -> bool:
        # "key in cache" then "cache[key]" (and get(), which does just that) is the usual
        # look-up: a miss is counted here, a hit when the value is read.
        found = super().__contains__(key)
        if not found:
            self.misses += 1
        return found

    def get(self, key: K, default: Any = None) -> Any:
        # One look-up instead of cachetools' "in" then "[]" (this runs per room member
        # per event in a large room).
        try:
            value = LRUCache.__getitem__(self, key)
        except KeyError:
            self.misses += 1
            return default
        self.hits += 1
        return value

    def __setitem__(self, key: K, value: V) -> None:
        if self.getsizeof(value) > self.maxsize:
            # An older, lighter value must not stay in its place (not a look-up: uncounted).
            if LRUCache.__contains__(self, key):
                LRUCache.__delitem__(self, key)
            return
        super().__setitem__(key, value)

    def popitem(self) -> tuple[K, V]:
        item = super().popitem()
        self.evictions += 1
        return item


# Live caches by identity (a cache compares equal to another with the same content, so a
# WeakSet would merge them).
_registry: weakref.WeakValueDictionary[int, MeasuredLRU[Any, Any]] = weakref.WeakValueDictionary()
# Other in-memory tables (bounded by what is in progress, not by a capacity): their sizes.
_tables: dict[str, Callable[[], int]] = {}


def register_table(name: str, size: Callable[[], int]) -> None:
    _tables[name] = size


def new_cache(name: str) -> MeasuredLRU[Any, Any]:
    return MeasuredLRU(name)


class _CacheCollector(Collector):
    """Reads every live cache at scrape time (no bookkeeping on the hot path)."""

    def collect(self) -> Iterator[Any]:
        size = GaugeMetricFamily(
            "homeserver_cache_size",
            "Entries in the cache (for state_groups: room-state entries)",
            labels=["name"],
        )
        cap = GaugeMetricFamily(
            "homeserver_cache_capacity", "Most the cache holds, as for its size", labels=["name"]
        )
        hits = CounterMetricFamily("homeserver_cache_hits", "Look-ups answered", labels=["name"])
        misses = CounterMetricFamily(
            "homeserver_cache_misses", "Look-ups not answered", labels=["name"]
        )
        evictions = CounterMetricFamily(
            "homeserver_cache_evictions", "Entries dropped to make room", labels=["name"]
        )
        totals: dict[str, list[float]] = {}
        for cache in list(_registry.values()):
            entry = totals.setdefault(cache.name, [0, 0, 0, 0, 0])
            for i, value in enumerate(
                (cache.currsize, cache.maxsize, cache.hits, cache.misses, cache.evictions)
            ):
                entry[i] += value
        for name, (n, m, h, miss, ev) in sorted(totals.items()):
            size.add_metric([name], n)
            cap.add_metric([name], m)
            hits.add_metric([name], h)
            misses.add_metric([name], miss)
            evictions.add_metric([name], ev)
        yield from (size, cap, hits, misses, evictions)
        tables = GaugeMetricFamily(
            "homeserver_memory_table_size", "Entries of an in-memory table", labels=["name"]
        )
        for name, measure in sorted(_tables.items()):
            tables.add_metric([name], measure())
        yield tables


REGISTRY.register(_CacheCollector())
