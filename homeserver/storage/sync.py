"""SQL for what /sync reads: filters, receipts, and changes since a stream position."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from homeserver.storage.engine import Database, Txn

JsonDict = dict[str, Any]


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

    async def get_changed_rooms(self, room_ids: Sequence[str], after: int, upto: int) -> set[str]:
        if not room_ids or after >= upto:
            return set()
        marks = ",".join("?" * len(room_ids))
        rows = await self.db.run(
            "get_changed_rooms",
            lambda txn: txn.select(
                f"SELECT DISTINCT room_id FROM events WHERE room_id IN ({marks}) "
                f"AND stream_ordering > ? AND stream_ordering <= ?",
                (*room_ids, after, upto),
            ),
        )
        return {r[0] for r in rows}

    async def get_membership_changes(
        self, user_id: str, after: int, upto: int
    ) -> list[tuple[str, str, int]]:
        """(room, membership, stream) of the user's membership changes in (after, upto]."""
        rows = await self.db.run(
            "get_membership_changes",
            lambda txn: txn.select(
                "SELECT room_id, membership, stream_ordering FROM room_memberships "
                "WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ? "
                "ORDER BY stream_ordering",
                (user_id, after, upto),
            ),
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def get_member_changes(self, room_ids: Sequence[str], after: int, upto: int) -> set[str]:
        """Users whose membership of any of the rooms changed in (after, upto]."""
        if not room_ids or after >= upto:
            return set()
        marks = ",".join("?" * len(room_ids))
        rows = await self.db.run(
            "get_member_changes",
            lambda txn: txn.select(
                f"SELECT DISTINCT user_id FROM room_memberships WHERE room_id IN ({marks}) "
                f"AND stream_ordering > ? AND stream_ordering <= ?",
                (*room_ids, after, upto),
            ),
        )
        return {r[0] for r in rows}

    async def get_account_data_since(
        self, user_id: str, after: int, upto: int
    ) -> list[tuple[str, str, JsonDict]]:
        rows = await self.db.run(
            "get_account_data_since",
            lambda txn: txn.select(
                "SELECT room_id, data_type, content FROM account_data WHERE user_id = ? "
                "AND stream_id > ? AND stream_id <= ? ORDER BY stream_id",
                (user_id, after, upto),
            ),
        )
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

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
