"""Small writes that arrive together share one transaction (group commit).

A lone request runs at once, as it would without batching; requests that arrive while its
transaction is in flight wait for it and then go together into the next one. Each
transaction is one hand-off to a database thread and one commit, which on a busy server
cost more than the statements of a small write (a one-time key claim is one statement).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from homeserver.storage.engine import Database, Txn

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatchedWrites(Generic[T, R]):
    """Runs ``txn_fn(txn, items)`` (one result per item, in order) for the items submitted
    while the previous batch was being written, up to ``max_batch`` at a time. A failed
    batch is split in halves and each retried, so that one bad item fails alone after a
    few transactions, not one per item of its batch. An item whose waiter has gone
    (cancelled) is not written."""

    def __init__(
        self,
        db: Database,
        name: str,
        txn_fn: Callable[[Txn, list[T]], list[R]],
        max_batch: int = 100,
    ) -> None:
        self.db = db
        self.name = name
        self.txn_fn = txn_fn
        self.max_batch = max_batch
        self._queue: list[tuple[T, defer.Deferred[R]]] = []
        self._writing = False

    async def submit(self, item: T) -> R:
        waiting: defer.Deferred[R] = defer.Deferred()
        self._queue.append((item, waiting))
        if not self._writing:
            self._writing = True
            defer.ensureDeferred(self._write_queued())
        return await waiting

    async def _write_queued(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    await self._write(batch, first=True)
                finally:
                    # Whatever happened, nobody waits forever.
                    for _, waiting in batch:
                        if not waiting.called:
                            waiting.errback(RuntimeError(f"{self.name}: batch not answered"))
        finally:
            self._writing = False

    async def _write(self, batch: list[tuple[T, defer.Deferred[R]]], first: bool = False) -> None:
        batch = [entry for entry in batch if not entry[1].called]
        if not batch:
            return
        try:
            results = await self.db.run(self.name, self.txn_fn, [item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)}")
        except Exception:
            if len(batch) == 1:
                batch[0][1].errback(Failure())
                return
            if first:
                logger.warning("%s: a batch of %d failed; retried in halves", self.name, len(batch))
            middle = len(batch) // 2
            await self._write(batch[:middle])
            await self._write(batch[middle:])
            return
        for (_, waiting), result in zip(batch, results, strict=True):
            if not waiting.called:
                waiting.callback(result)
