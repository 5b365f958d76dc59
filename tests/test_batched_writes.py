"""Group commit of small writes (homeserver.storage.batching): a lone write runs at once,
writes that arrive while a transaction is in flight share the next one, and a failing
batch is retried item by item so that one bad item fails alone. The database is a stand-in
whose transactions finish when the test says, so every interleaving is exact."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer

from homeserver.storage.batching import BatchedWrites


class Refused(Exception):
    pass


class HeldDatabase:
    """``run`` answers when ``finish`` is called: the item doubled, or a failure for the
    whole transaction if any item is negative."""

    def __init__(self) -> None:
        self.transactions: list[list[int]] = []
        self._pending: list[defer.Deferred[list[int]]] = []

    def run(self, name: str, txn_fn: Any, items: list[int]) -> defer.Deferred[list[int]]:
        assert name == "double"
        self.transactions.append(list(items))
        pending: defer.Deferred[list[int]] = defer.Deferred()
        self._pending.append(pending)
        return pending

    def finish(self) -> None:
        pending = self._pending.pop(0)
        items = self.transactions[len(self.transactions) - len(self._pending) - 1]
        if any(i < 0 for i in items):
            pending.errback(Refused(str(items)))
        else:
            pending.callback([i * 2 for i in items])


def submit(batcher: BatchedWrites[int, int], item: int) -> defer.Deferred[int]:
    return defer.ensureDeferred(batcher.submit(item))


def result(d: defer.Deferred[int]) -> Any:
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    assert outcome, "not answered yet"
    return outcome[0]


@pytest.fixture
def db() -> HeldDatabase:
    return HeldDatabase()


def batcher_on(db: HeldDatabase, max_batch: int = 100) -> BatchedWrites[int, int]:
    return BatchedWrites(db, "double", lambda txn, items: items, max_batch)  # type: ignore[arg-type]


def test_a_lone_write_runs_at_once(db: HeldDatabase) -> None:
    batcher = batcher_on(db)
    first = submit(batcher, 1)
    assert db.transactions == [[1]]
    db.finish()
    assert result(first) == 2


def test_writes_queued_behind_one_in_flight_share_the_next_transaction(db: HeldDatabase) -> None:
    batcher = batcher_on(db)
    first = submit(batcher, 1)
    queued = [submit(batcher, i) for i in (2, 3, 4)]
    assert db.transactions == [[1]]  # the others wait for the one in flight
    db.finish()
    assert db.transactions == [[1], [2, 3, 4]]
    assert result(first) == 2
    db.finish()
    assert [result(d) for d in queued] == [4, 6, 8]
    # Idle again: the next write runs at once, alone.
    last = submit(batcher, 5)
    assert db.transactions[-1] == [5]
    db.finish()
    assert result(last) == 10


def test_a_batch_holds_at_most_max_batch_items(db: HeldDatabase) -> None:
    batcher = batcher_on(db, max_batch=2)
    waiting = [submit(batcher, i) for i in range(1, 6)]
    for _ in range(3):
        db.finish()
    assert db.transactions == [[1], [2, 3], [4, 5]]
    assert [result(d) for d in waiting] == [2, 4, 6, 8, 10]


def test_a_failing_batch_is_retried_in_halves_and_only_the_bad_item_fails(
    db: HeldDatabase,
) -> None:
    batcher = batcher_on(db)
    first = submit(batcher, 1)
    good, bad, other = submit(batcher, 2), submit(batcher, -3), submit(batcher, 4)
    db.finish()
    db.finish()  # [2, -3, 4] fails as a whole: nothing of it was written
    assert db.transactions == [[1], [2, -3, 4], [2]]
    for _ in range(4):
        db.finish()
    assert db.transactions == [[1], [2, -3, 4], [2], [-3, 4], [-3], [4]]
    assert result(first) == 2 and result(good) == 4 and result(other) == 8
    failure = result(bad)
    assert failure.check(Refused), failure
    # The batcher carries on after a failure.
    later = submit(batcher, 6)
    db.finish()
    assert result(later) == 12


def test_one_bad_item_among_many_costs_a_few_transactions(db: HeldDatabase) -> None:
    batcher = batcher_on(db)
    first = submit(batcher, 1)
    items = [submit(batcher, -i if i == 37 else i) for i in range(2, 66)]  # 64 queued
    while db._pending:
        db.finish()
    assert result(first) == 2
    assert len(db.transactions) <= 2 + 2 * 6  # halving: two per level, six levels
    answers = [result(d) for d in items]
    failures = [a for a in answers if not isinstance(a, int)]
    assert len(failures) == 1 and failures[0].check(Refused)
    assert [a for a in answers if isinstance(a, int)] == [i * 2 for i in range(2, 66) if i != 37]


def test_a_cancelled_waiter_is_not_written(db: HeldDatabase) -> None:
    batcher = batcher_on(db)
    first = submit(batcher, 1)
    gone, kept = submit(batcher, 2), submit(batcher, 3)
    gone.cancel()
    result(gone).trap(defer.CancelledError)
    db.finish()
    db.finish()
    assert db.transactions == [[1], [3]]
    assert result(first) == 2 and result(kept) == 6


def test_a_wrong_number_of_results_fails_every_waiter_instead_of_hanging(
    db: HeldDatabase,
) -> None:
    batcher: BatchedWrites[int, int] = BatchedWrites(
        db,
        "double",
        lambda txn, items: items,
        100,  # type: ignore[arg-type]
    )
    waiting = submit(batcher, 1)
    db._pending.pop(0).callback([])  # a transaction answering nothing
    failure = result(waiting)
    assert failure.check(RuntimeError), failure
