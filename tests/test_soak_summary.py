"""The soak's summary: when the caches were full, and how memory grew after that."""

from __future__ import annotations

from typing import Any

from scripts.soak import cache_metrics, caches_full_minute, rss_growth_percent_per_hour, summary


def minute(n: int, rss: float, events: int, states: int) -> dict[str, Any]:
    return {
        "minute": n, "rss_mib": rss, "errors": 0, "send_p99": 10.0, "wakeup_p99": 20.0,
        "cpu_ms_per_request": 5.0,
        "caches": {
            "events": {"size": events, "capacity": 100},
            "state_groups": {"size": states, "capacity": 1000},  # weighed: just short
            "room_versions": {"size": 7, "capacity": 5000},  # never fills
            "gc_pauses": {"gen2_count": 1.0},
        },
    }  # fmt: skip


def test_caches_full_from_the_minute_the_last_filling_cache_filled() -> None:
    series = [minute(1, 100, 40, 100), minute(2, 110, 100, 500), minute(3, 120, 100, 960)]
    series += [minute(n, 120 + (n - 3) * 0.1, 100, 990) for n in range(4, 64)]
    assert caches_full_minute(series) == 3
    result = summary(series)
    assert result["caches_full_minute"] == 3
    assert result["caches_not_full_at_end"] == {"room_versions": 7}
    # 120 -> 126 MiB over the 60 minutes after minute 3: 5 % an hour.
    assert abs(result["rss_growth_percent_per_hour_after_caches_full"] - 5.0) < 1e-9


def test_a_cache_that_falls_back_below_full_restarts_the_count() -> None:
    series = [minute(n, 100, 100, 960) for n in range(1, 11)]
    series[4] = minute(5, 100, 100, 700)  # a heavy state evicted lighter ones
    assert caches_full_minute(series) == 6


def test_no_cache_filled_means_no_figure() -> None:
    series = [minute(n, 100 + n, 10, 10) for n in range(1, 31)]
    assert caches_full_minute(series) is None
    assert summary(series)["rss_growth_percent_per_hour_after_caches_full"] is None


def test_growth_after_a_late_fill_is_not_a_rate() -> None:
    series = [minute(n, 100, 100 if n > 25 else 50, 0) for n in range(1, 31)]
    assert caches_full_minute(series) == 26
    assert rss_growth_percent_per_hour(series, 26) is None  # 4 minutes is too short


def test_cache_metrics_read_from_the_metrics_text() -> None:
    text = "\n".join([
        '# HELP homeserver_cache_size Entries in the cache',
        'homeserver_cache_size{name="events"} 12.0',
        'homeserver_cache_capacity{name="events"} 100.0',
        'homeserver_cache_hits_total{name="events"} 7.0',
        'homeserver_cache_misses_total{name="events"} 3.0',
        'homeserver_cache_size{name="room_versions"} 0.0',
        'homeserver_gc_pause_seconds_count{generation="2"} 4.0',
        'homeserver_gc_pause_seconds_sum{generation="2"} 0.5',
    ])  # fmt: skip
    assert cache_metrics(text) == {
        "events": {"size": 12.0, "capacity": 100.0, "hits": 7.0, "misses": 3.0},
        "room_versions": {"size": 0.0, "capacity": 0, "hits": 0, "misses": 0},
        "gc_pauses": {"gen2_count": 4.0, "gen2_sum": 0.5},
    }
