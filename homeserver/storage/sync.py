"""SQL for what /sync reads: filters, receipts, and changes since a stream position."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

from homeserver.storage.e2ee import DeviceSyncState, device_sync_state_txn
from homeserver.storage.engine import Database, Txn
from homeserver.storage.events import (
    RelationRow,
    latest_event_ids_txn,
    member_summaries_txn,
    membership_records_txn,
    relations_of_txn,
    user_memberships_txn,
)
from homeserver.storage.push import unread_counts_txn
from homeserver.streams import SyncToken

JsonDict = dict[str, Any]


@dataclass
class SyncWindow:
    memberships: dict[str, str]  # room -> the user's membership there now
    account_data: list[tuple[str, str, JsonDict]] = field(default_factory=list)
    membership_changes: list[tuple[str, str, int]] = field(default_factory=list)
    changed_rooms: set[str] = field(default_factory=set)  # joined rooms with new events
    member_changes: set[str] = field(default_factory=set)  # in any joined room
    device: DeviceSyncState | None = None  # when read for a device

    def rooms(self, *memberships: str) -> list[str]:
        return [room for room, m in self.memberships.items() if m in memberships]


@dataclass
class RoomBatch:
    """What every room in a sync answer needs, read for all of them at once."""

    summaries: dict[str, list[tuple[str, str]]]
    unread: dict[str, tuple[int, int, dict[str, tuple[int, int]]]]
    records: dict[str, tuple[list[tuple[int, str]], bool]]
    first_pages: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    # The relations to every event of the first pages, by related event (serialising a
    # timeline bundles them); None when not read.
    relations: dict[str, list[RelationRow]] | None = None


class SyncStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Filters

    async def add_filter(self, user_id: str, filter_json: JsonDict) -> int:
        encoded = json.dumps(filter_json, sort_keys=True)

        def txn_fn(txn: Txn) -> int:
            row = txn.select_one(
                "SELECT filter_id FROM user_filters WHERE user_id = ? AND filter_json = ?",
                (user_id, encoded),
            )
            if row is not None:
                return int(row[0])
            row = txn.select_one(
                "SELECT MAX(filter_id) FROM user_filters WHERE user_id = ?", (user_id,)
            )
            filter_id = (int(row[0]) + 1) if row and row[0] is not None else 0
            txn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)",
                (user_id, filter_id, encoded),
            )
            return filter_id

        return await self.db.run("add_filter", txn_fn)

    async def get_filter(self, user_id: str, filter_id: int) -> JsonDict | None:
        row = await self.db.run(
            "get_filter",
            lambda txn: txn.select_one(
                "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?",
                (user_id, filter_id),
            ),
        )
        return json.loads(row[0]) if row else None

    # Receipts

    async def get_max_receipt_stream(self) -> int:
        row = await self.db.run(
            "receipts_max_stream", lambda txn: txn.select_one("SELECT MAX(stream_id) FROM receipts")
        )
        return int(row[0]) if row and row[0] is not None else 0

    async def put_receipt(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        thread_id: str,
        event_id: str,
        ts: int,
        stream_id: int,
    ) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, "
                "stream_id) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET "
                "event_id = excluded.event_id, ts = excluded.ts, stream_id = excluded.stream_id",
                (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id),
            )

        await self.db.run("put_receipt", txn_fn)

    async def get_receipts(
        self, room_ids: Sequence[str], after: int, upto: int
    ) -> list[tuple[str, str, str, str, str, int]]:
        """(room, type, user, thread, event, ts) of receipts that changed in (after, upto]."""
        if not room_ids or after >= upto:
            return []
        marks = ",".join("?" * len(room_ids))
        return await self.db.run(
            "get_receipts",
            lambda txn: txn.select(
                f"SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts "
                f"WHERE room_id IN ({marks}) AND stream_id > ? AND stream_id <= ?",
                (*room_ids, after, upto),
            ),
        )

    # Changes since a position

    async def get_account_data_since(
        self, user_id: str, after: int, upto: int
    ) -> list[tuple[str, str, JsonDict]]:
        return await self.db.run("get_account_data_since", _account_data_txn, user_id, after, upto)

    async def read_window(
        self,
        user_id: str,
        since: SyncToken | None,
        now: SyncToken,
        device_id: str | None = None,
        to_device_limit: int = 100,
    ) -> SyncWindow:
        """Everything about the user's rooms and account data a sync from ``since`` to
        ``now`` starts from, and with ``device_id`` that device's state (its next to-device
        batch, after deleting what it acknowledged), in one transaction (one hand-off to
        the database thread)."""

        def txn_fn(txn: Txn) -> SyncWindow:
            # An incremental answer holds the rooms the user is in, invited to or knocking
            # at, and those whose membership changed in the window (added below): not
            # every room they ever left, a list that only grows.
            current = None if since is None else ("join", "invite", "knock")
            memberships = user_memberships_txn(txn, user_id, current)
            window = SyncWindow(memberships)
            if device_id is not None:
                window.device = device_sync_state_txn(
                    txn, user_id, device_id, since.to_device if since else 0, now.to_device,
                    to_device_limit,
                )  # fmt: skip
            after_data = since.account_data if since is not None else 0
            if after_data < now.account_data:
                window.account_data = _account_data_txn(txn, user_id, after_data, now.account_data)
            if since is None or since.events >= now.events:
                return window
            joined = [room for room, m in memberships.items() if m == "join"]
            window.membership_changes = _membership_changes_txn(
                txn, user_id, since.events, now.events
            )
            left = sorted({room for room, _, _ in window.membership_changes} - set(memberships))
            if left:
                memberships.update(user_memberships_txn(txn, user_id, room_ids=left))
            window.changed_rooms = _changed_rooms_txn(txn, joined, since.events, now.events)
            window.member_changes = _member_changes_txn(txn, joined, since.events, now.events)
            return window

        return await self.db.run("read_sync_window", txn_fn)

    async def read_room_batch(
        self,
        user_id: str,
        room_ids: Sequence[str],
        after: int | None,
        upto: int,
        page: int | None,
    ) -> RoomBatch:
        """Member summaries, unread counts, the user's membership records and (given a
        ``page`` size) the newest events in (after, upto] of each room and the relations to
        them: in one transaction on a single connection (SQLite); where the pool has more
        (PostgreSQL), the unread counts in a second transaction at the same time."""
        concurrent = self.db.engine.pool_size[1] > 1

        def txn_fn(txn: Txn) -> RoomBatch:
            batch = RoomBatch(
                member_summaries_txn(txn, room_ids),
                {} if concurrent else unread_counts_txn(txn, user_id, room_ids),
                membership_records_txn(txn, user_id, room_ids),
            )
            if page is not None:
                batch.first_pages = latest_event_ids_txn(txn, room_ids, after, upto, page)
                page_ids = [e for rows in batch.first_pages.values() for e, _ in rows]
                batch.relations = {e: [] for e in page_ids}
                for row in relations_of_txn(txn, page_ids):
                    batch.relations[row[0]].append(row)
            return batch

        if not concurrent:
            return await self.db.run("read_sync_rooms", txn_fn)
        unread = Deferred.fromCoroutine(
            self.db.run("read_sync_unread", unread_counts_txn, user_id, room_ids)
        )
        try:
            batch = await self.db.run("read_sync_rooms", txn_fn)
        except BaseException:
            unread.addErrback(lambda _: None)  # the first failure is the one reported
            raise
        batch.unread = await unread
        return batch

    async def get_state_changes(self, room_id: str, after: int, before: int) -> list[str]:
        """IDs of state events sent in the room in (after, before)."""
        rows = await self.db.run(
            "get_state_changes",
            lambda txn: txn.select(
                "SELECT event_id FROM events WHERE room_id = ? AND state_key IS NOT NULL "
                "AND stream_ordering > ? AND stream_ordering < ? AND rejected = 0",
                (room_id, after, before),
            ),
        )
        return [r[0] for r in rows]


def _changed_rooms_txn(txn: Txn, room_ids: Sequence[str], after: int, upto: int) -> set[str]:
    return _distinct_in_window(txn, "room_id", "events", room_ids, after, upto)


def _membership_changes_txn(
    txn: Txn, user_id: str, after: int, upto: int
) -> list[tuple[str, str, int]]:
    rows = txn.select(
        "SELECT room_id, membership, stream_ordering FROM room_memberships "
        "WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ? "
        "ORDER BY stream_ordering",
        (user_id, after, upto),
    )
    return [(r[0], r[1], int(r[2])) for r in rows]


def _member_changes_txn(txn: Txn, room_ids: Sequence[str], after: int, upto: int) -> set[str]:
    return _distinct_in_window(txn, "user_id", "room_memberships", room_ids, after, upto)


def _distinct_in_window(
    txn: Txn, column: str, table: str, room_ids: Sequence[str], after: int, upto: int
) -> set[str]:
    """The distinct ``column`` values of ``table`` rows of the rooms in (after, upto] of
    the event stream (both tables carry the event's ``stream_ordering``)."""
    if not room_ids or after >= upto:
        return set()
    marks = ",".join("?" * len(room_ids))
    rows = txn.select(
        f"SELECT DISTINCT {column} FROM {table} WHERE room_id IN ({marks}) "
        f"AND stream_ordering > ? AND stream_ordering <= ?",
        (*room_ids, after, upto),
    )
    return {r[0] for r in rows}


def _account_data_txn(
    txn: Txn, user_id: str, after: int, upto: int
) -> list[tuple[str, str, JsonDict]]:
    rows = txn.select(
        "SELECT room_id, data_type, content FROM account_data WHERE user_id = ? "
        "AND stream_id > ? AND stream_id <= ? ORDER BY stream_id",
        (user_id, after, upto),
    )
    return [(r[0], r[1], json.loads(r[2])) for r in rows]
