"""Full garbage collections on a timer (homeserver/gc_policy.py), with the process's own
collector: the settings are put back after each test."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock

from homeserver.gc_policy import collect_oldest_on_a_timer


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


def test_the_oldest_generation_is_collected_on_the_timer_only(restore_gc: None) -> None:
    clock = Clock()
    loop = collect_oldest_on_a_timer(clock, 300)
    assert loop is not None
    assert gc.get_freeze_count() > 0  # what was alive at start is out of every collection
    before = full_collections()
    # Far more surviving containers than the interpreter's own rule lets pass without a
    # full collection (about 70,000 allocations and a quarter more long-lived objects).
    kept = [[{} for _ in range(100)] for _ in range(5_000)]
    assert full_collections() == before
    clock.advance(299)
    assert full_collections() == before
    clock.advance(1)
    assert full_collections() == before + 1
    clock.advance(300)
    assert full_collections() == before + 2
    loop.stop()
    assert len(kept) == 5_000


def test_zero_leaves_the_interpreter_in_charge(restore_gc: None) -> None:
    thresholds = gc.get_threshold()
    assert collect_oldest_on_a_timer(Clock(), 0) is None
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == 0
