"""The measured LRU caches: counting, and capacity by weight where a value's size varies."""

from __future__ import annotations

from homeserver.caches import MeasuredLRU


def test_weighed_cache_holds_entries_not_values() -> None:
    cache: MeasuredLRU[int, dict[str, str]] = MeasuredLRU("test_states", maxsize=10, weigh=len)
    cache[1] = {str(i): "x" for i in range(4)}
    cache[2] = {str(i): "x" for i in range(4)}
    assert cache.currsize == 8 and len(cache) == 2
    cache[3] = {str(i): "x" for i in range(4)}  # 12 > 10: the least recently used goes
    assert 1 not in cache and 2 in cache and 3 in cache
    assert cache.currsize == 8 and cache.evictions == 1


def test_value_heavier_than_the_capacity_is_not_kept() -> None:
    cache: MeasuredLRU[int, dict[str, str]] = MeasuredLRU("test_states", maxsize=10, weigh=len)
    cache[1] = {"a": "x"}
    cache[2] = {"b": "x"}
    cache[1] = {str(i): "x" for i in range(11)}  # a room whose state outgrew the cache
    assert cache.get(1) is None  # not kept, and the older, lighter state is gone too
    assert cache.get(2) == {"b": "x"}
    assert cache.currsize == 1


def test_unweighed_cache_counts_entries_and_look_ups() -> None:
    cache: MeasuredLRU[str, int] = MeasuredLRU("test_plain", maxsize=2)
    cache["a"] = 1
    cache["b"] = 2
    assert cache.get("a") == 1 and cache.get("zz") is None
    cache["c"] = 3  # "b" is the least recently used
    assert "b" not in cache and cache.currsize == 2
    assert cache.hits == 1 and cache.misses == 2 and cache.evictions == 1
