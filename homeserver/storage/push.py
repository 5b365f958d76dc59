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


UnreadCounts = tuple[int, int, dict[str, tuple[int, int]]]
_CHUNK = 200  # rooms per statement


def unread_counts_txn(txn: Txn, user_id: str, room_ids: Sequence[str]) -> dict[str, UnreadCounts]:
    """Counts per room and thread, a few statements for all the rooms together. An
    unthreaded receipt (or the user's own latest event) reads every thread up to it; a
    ``main`` receipt reads the main timeline; a thread receipt its thread."""
    result: dict[str, UnreadCounts] = {}
    unique = list(dict.fromkeys(room_ids))
    for start in range(0, len(unique), _CHUNK):
        result.update(_unread_chunk(txn, user_id, unique[start : start + _CHUNK]))
    return result


def _unread_chunk(txn: Txn, user_id: str, room_ids: list[str]) -> dict[str, UnreadCounts]:
    marks = ",".join("?" * len(room_ids))
    receipts: dict[str, dict[str, int]] = {room_id: {} for room_id in room_ids}
    for room_id, thread, pos in txn.select(
        f"SELECT r.room_id, r.thread_id, MAX(e.stream_ordering) FROM receipts r "
        f"JOIN events e ON e.event_id = r.event_id WHERE r.room_id IN ({marks}) "
        f"AND r.user_id = ? AND r.receipt_type IN ('m.read', 'm.read.private') "
        f"GROUP BY r.room_id, r.thread_id",
        (*room_ids, user_id),
    ):
        receipts[room_id][thread] = int(pos)
    own: dict[str, int | None] = dict(
        txn.select(
            f"SELECT room_id, MAX(stream_ordering) FROM events WHERE room_id IN ({marks}) "
            f"AND sender = ? GROUP BY room_id",
            (*room_ids, user_id),
        )
    )
    everywhere = {
        room_id: max(receipts[room_id].get("", 0), int(own.get(room_id) or 0))
        for room_id in room_ids
    }
    # Counted by the database, not row by row here: a user who has not read a busy room
    # for a while has many rows past their read position.
    values = ",".join("(?, CAST(? AS BIGINT))" for _ in room_ids)
    positions = [v for room_id in room_ids for v in (room_id, everywhere[room_id])]
    threads: dict[str, dict[str, tuple[int, int]]] = {room_id: {} for room_id in room_ids}
    for counted_room, thread, count, high in txn.select(
        f"WITH read_upto (room_id, pos) AS (VALUES {values}) "
        f"SELECT a.room_id, a.thread_id, COUNT(*), SUM(a.highlight) FROM event_push_actions a "
        f"JOIN read_upto ON read_upto.room_id = a.room_id WHERE a.user_id = ? "
        f"AND a.stream_ordering > read_upto.pos GROUP BY a.room_id, a.thread_id",
        (*positions, user_id),
    ):
        threads[counted_room][thread] = (int(count), int(high or 0))
    for room_id in room_ids:
        for thread, read_upto in receipts[room_id].items():
            if thread and thread in threads[room_id] and read_upto > everywhere[room_id]:
                # The thread's own receipt reads further into it (rare: looked up alone).
                row = txn.select_one(
                    "SELECT COUNT(*), SUM(highlight) FROM event_push_actions WHERE user_id = ? "
                    "AND room_id = ? AND thread_id = ? AND stream_ordering > ?",
                    (user_id, room_id, thread, read_upto),
                )
                count, high = (int(row[0]), int(row[1] or 0)) if row else (0, 0)
                if count:
                    threads[room_id][thread] = (count, high)
                else:
                    del threads[room_id][thread]
    return {
        room_id: (
            sum(count for count, _ in counts.values()),
            sum(high for _, high in counts.values()),
            counts,
        )
        for room_id, counts in threads.items()
    }


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
    ) -> dict[str, UnreadCounts]:
        return await self.db.run("get_unread_counts", unread_counts_txn, user_id, room_ids)

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

    async def get_pushers_of(self, user_ids: Sequence[str]) -> dict[str, list[JsonDict]]:
        """Every given user's pushers (an empty list for most), in one transaction."""
        unique = list(dict.fromkeys(user_ids))

        def txn_fn(txn: Txn) -> dict[str, list[JsonDict]]:
            result: dict[str, list[JsonDict]] = {user_id: [] for user_id in unique}
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                for user_id, pusher_json in txn.select(
                    f"SELECT user_id, pusher_json FROM pushers WHERE user_id IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY created_ts",
                    chunk,
                ):
                    result[user_id].append(json.loads(pusher_json))
            return result

        return await self.db.run("get_pushers_of", txn_fn)

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
