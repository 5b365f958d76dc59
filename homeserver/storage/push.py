"""SQL for push rules, notifications (push actions) and pushers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from homeserver.storage.engine import Database, Txn

JsonDict = dict[str, Any]

# Where a user has read up to in a room: the later of their unthreaded/main read receipts
# (public or private) and their own latest event.
_READ_POSITION = """
SELECT MAX(pos) FROM (
  SELECT MAX(e.stream_ordering) AS pos FROM receipts r JOIN events e ON e.event_id = r.event_id
  WHERE r.room_id = ? AND r.user_id = ? AND r.receipt_type IN ('m.read', 'm.read.private')
    AND r.thread_id IN ('', 'main')
  UNION ALL
  SELECT MAX(stream_ordering) AS pos FROM events WHERE room_id = ? AND sender = ?
) AS positions
"""


def unread_counts_txn(
    txn: Txn, user_id: str, room_id: str
) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """Counts per thread. An unthreaded receipt (or the user's own latest event) reads every
    thread up to it; a ``main`` receipt reads the main timeline; a thread receipt its thread."""
    receipts = {
        thread: int(pos)
        for thread, pos in txn.select(
            "SELECT r.thread_id, MAX(e.stream_ordering) FROM receipts r "
            "JOIN events e ON e.event_id = r.event_id WHERE r.room_id = ? AND r.user_id = ? "
            "AND r.receipt_type IN ('m.read', 'm.read.private') GROUP BY r.thread_id",
            (room_id, user_id),
        )
    }
    own = txn.select_one(
        "SELECT MAX(stream_ordering) FROM events WHERE room_id = ? AND sender = ?",
        (room_id, user_id),
    )
    everywhere = max(receipts.get("", 0), int(own[0]) if own and own[0] is not None else 0)
    total = highlight = 0
    threads: dict[str, tuple[int, int]] = {}
    for thread, stream, is_highlight in txn.select(
        "SELECT thread_id, stream_ordering, highlight FROM event_push_actions "
        "WHERE user_id = ? AND room_id = ? AND stream_ordering > ?",
        (user_id, room_id, everywhere),
    ):
        if stream <= receipts.get(thread, 0):
            continue
        total += 1
        highlight += int(is_highlight)
        count, high = threads.get(thread, (0, 0))
        threads[thread] = (count + 1, high + int(is_highlight))
    return total, highlight, threads


class PushStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_rules(self, user_id: str) -> JsonDict | None:
        row = await self.db.run(
            "get_push_rules",
            lambda txn: txn.select_one(
                "SELECT rules_json FROM push_rules WHERE user_id = ?", (user_id,)
            ),
        )
        return json.loads(row[0]) if row else None

    async def set_rules(self, user_id: str, rules: JsonDict) -> None:
        encoded = json.dumps(rules)
        await self.db.run(
            "set_push_rules",
            lambda txn: txn.execute(
                "INSERT INTO push_rules (user_id, rules_json) VALUES (?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET rules_json = excluded.rules_json",
                (user_id, encoded),
            ),
        )

    async def get_unread_counts(
        self, user_id: str, room_id: str
    ) -> tuple[int, int, dict[str, tuple[int, int]]]:
        """(notifications, highlights, {thread: (notifications, highlights)}) still unread."""
        return (await self.get_unread_counts_many(user_id, [room_id]))[room_id]

    async def get_unread_counts_many(
        self, user_id: str, room_ids: Sequence[str]
    ) -> dict[str, tuple[int, int, dict[str, tuple[int, int]]]]:
        def txn_fn(txn: Txn) -> dict[str, tuple[int, int, dict[str, tuple[int, int]]]]:
            return {room_id: unread_counts_txn(txn, user_id, room_id) for room_id in room_ids}

        return await self.db.run("get_unread_counts", txn_fn)

    async def get_notifications(
        self, user_id: str, before: int | None, limit: int, only_highlight: bool
    ) -> list[tuple[str, str, int, str, int]]:
        """(room, event, stream, actions JSON, read-upto) newest first."""

        def txn_fn(txn: Txn) -> list[tuple[str, str, int, str, int]]:
            sql = (
                "SELECT room_id, event_id, stream_ordering, actions FROM event_push_actions "
                "WHERE user_id = ?"
            )
            args: list[Any] = [user_id]
            if before is not None:
                sql += " AND stream_ordering < ?"
                args.append(before)
            if only_highlight:
                sql += " AND highlight = 1"
            sql += " ORDER BY stream_ordering DESC LIMIT ?"
            args.append(limit)
            result = []
            positions: dict[str, int] = {}
            for room_id, event_id, stream, actions in txn.select(sql, args):
                if room_id not in positions:
                    row = txn.select_one(_READ_POSITION, (room_id, user_id, room_id, user_id))
                    positions[room_id] = int(row[0]) if row and row[0] is not None else 0
                result.append((room_id, event_id, int(stream), actions, positions[room_id]))
            return result

        return await self.db.run("get_notifications", txn_fn)

    # Pushers

    async def get_pushers(self, user_id: str | None = None) -> list[tuple[str, JsonDict]]:
        sql = "SELECT user_id, pusher_json FROM pushers"
        args: tuple[str, ...] = ()
        if user_id is not None:
            sql += " WHERE user_id = ?"
            args = (user_id,)
        rows = await self.db.run(
            "get_pushers", lambda txn: txn.select(sql + " ORDER BY created_ts", args)
        )
        return [(r[0], json.loads(r[1])) for r in rows]

    async def set_pusher(self, user_id: str, pusher: JsonDict, append: bool, now_ms: int) -> None:
        """Add or replace a pusher; without ``append`` the pushkey leaves other users."""
        app_id, pushkey = pusher["app_id"], pusher["pushkey"]

        def txn_fn(txn: Txn) -> None:
            if not append:
                txn.execute(
                    "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id != ?",
                    (app_id, pushkey, user_id),
                )
            txn.execute(
                "INSERT INTO pushers (user_id, app_id, pushkey, pusher_json, created_ts) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, app_id, pushkey) "
                "DO UPDATE SET pusher_json = excluded.pusher_json",
                (user_id, app_id, pushkey, json.dumps(pusher), now_ms),
            )

        await self.db.run("set_pusher", txn_fn)

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> None:
        await self.db.run(
            "delete_pusher",
            lambda txn: txn.execute(
                "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                (user_id, app_id, pushkey),
            ),
        )
