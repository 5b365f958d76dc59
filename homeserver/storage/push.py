"""SQL for push rules, notifications (push actions) and pushers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.engine import Database, Txn

JsonDict = dict[str, Any]


@dataclass
class EventNotifications:
    """What one event notifies. ``shared`` (actions JSON, highlight) is the answer of the
    room's joined members, stored once; ``members`` (user, actions JSON, highlight,
    notify) are the members whose answer differs (notify 0: not notified although the
    room is) and notified users who are not joined (an invitee)."""

    thread_id: str
    shared: tuple[str, int] | None
    members: list[tuple[str, str, int, int]]


def store_notifications_txn(
    txn: Txn, room_id: str, event_id: str, sender: str, stream: int, found: EventNotifications
) -> None:
    if found.shared is not None:
        txn.execute(
            "INSERT INTO event_notifications (event_id, room_id, sender, stream_ordering, "
            "thread_id, actions, highlight) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event_id, room_id, sender, stream, found.thread_id, *found.shared),
        )
    if found.members:
        txn.execute_many(
            "INSERT INTO event_push_actions (user_id, room_id, event_id, stream_ordering, "
            "thread_id, actions, highlight, notify) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (user_id, room_id, event_id, stream, found.thread_id, actions, high, notify)
                for user_id, actions, high, notify in found.members
            ],
        )


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
    # One index seek per room for the user's latest event (MAX over a GROUP BY would read
    # every event the user ever sent there).
    wanted = ",".join("(?)" for _ in room_ids)
    own: dict[str, int | None] = dict(
        txn.select(
            f"WITH wanted (room_id) AS (VALUES {wanted}) SELECT wanted.room_id, "
            f"(SELECT MAX(e.stream_ordering) FROM events e WHERE e.room_id = wanted.room_id "
            f"AND e.sender = ?) FROM wanted",
            (*room_ids, user_id),
        )
    )
    everywhere = {
        room_id: max(receipts[room_id].get("", 0), int(own.get(room_id) or 0))
        for room_id in room_ids
    }
    threads: dict[str, dict[str, tuple[int, int]]] = {room_id: {} for room_id in room_ids}
    for (counted_room, thread), counts in _counts_past(
        txn, user_id, [(room_id, everywhere[room_id]) for room_id in room_ids]
    ).items():
        threads[counted_room][thread] = counts
    for room_id in room_ids:
        for thread, read_upto in receipts[room_id].items():
            if thread and thread in threads[room_id] and read_upto > everywhere[room_id]:
                # The thread's own receipt reads further into it (rare: looked up alone).
                further = _counts_past(txn, user_id, [(room_id, read_upto)], thread)
                if (room_id, thread) in further:
                    threads[room_id][thread] = further[(room_id, thread)]
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


def _counts_past(
    txn: Txn, user_id: str, positions: list[tuple[str, int]], thread: str | None = None
) -> dict[tuple[str, str], tuple[int, int]]:
    """(notifications, highlights) per (room, thread) past each room's read position:
    the room's shared notifications while the user is joined, unless the user has their
    own answer for the event, plus the user's own notifying rows. Counted by the
    database, not row by row here: a user who has not read a busy room for a while has
    many notifications past their read position.

    Every event past a read position came after the user's latest event in the room
    (their join included): the user was joined when it was sent and did not send it."""
    values = ",".join("(?, CAST(? AS BIGINT))" for _ in positions)
    args: list[Any] = [v for pair in positions for v in pair]
    read_upto = f"WITH read_upto (room_id, pos) AS (VALUES {values}) "
    in_thread = " AND {0}.thread_id = ?" if thread is not None else ""
    shared = (
        read_upto + "SELECT n.room_id, n.thread_id, COUNT(*), SUM(n.highlight) "
        "FROM event_notifications n JOIN read_upto ON read_upto.room_id = n.room_id "
        "AND n.stream_ordering > read_upto.pos "
        "JOIN current_state m ON m.room_id = n.room_id AND m.type = 'm.room.member' "
        "AND m.state_key = ? AND m.membership = 'join' "
        "WHERE NOT EXISTS (SELECT 1 FROM event_push_actions a WHERE a.user_id = ? "
        "AND a.event_id = n.event_id)" + in_thread.format("n") + " GROUP BY n.room_id, n.thread_id"
    )
    own = (
        read_upto + "SELECT a.room_id, a.thread_id, COUNT(*), SUM(a.highlight) "
        "FROM event_push_actions a JOIN read_upto ON read_upto.room_id = a.room_id "
        "AND a.stream_ordering > read_upto.pos WHERE a.user_id = ? AND a.notify = 1"
        + in_thread.format("a")
        + " GROUP BY a.room_id, a.thread_id"
    )
    only = [thread] if thread is not None else []
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    for sql, users in ((shared, [user_id, user_id]), (own, [user_id])):
        for room_id, thread_id, count, high in txn.select(sql, (*args, *users, *only)):
            before = counts.get((room_id, thread_id), (0, 0))
            counts[(room_id, thread_id)] = (before[0] + int(count), before[1] + int(high or 0))
    return counts


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
            where, filters = "", []
            if before is not None:
                where += " AND {0}.stream_ordering < ?"
                filters.append(before)
            if only_highlight:
                where += " AND {0}.highlight = 1"
            own = (
                "SELECT a.room_id, a.event_id, a.stream_ordering, a.actions "
                "FROM event_push_actions a WHERE a.user_id = ? AND a.notify = 1" + where.format("a")
            )
            # The shared notifications of rooms the user was joined to when they came,
            # unless the user sent the event or has an answer of their own for it.
            shared = (
                "SELECT n.room_id, n.event_id, n.stream_ordering, n.actions "
                "FROM event_notifications n WHERE n.room_id IN (SELECT room_id "
                "FROM room_memberships WHERE user_id = ? AND membership = 'join') "
                "AND n.sender != ? AND (SELECT r.membership FROM room_memberships r "
                "WHERE r.user_id = ? AND r.room_id = n.room_id "
                "AND r.stream_ordering < n.stream_ordering "
                "ORDER BY r.stream_ordering DESC LIMIT 1) = 'join' AND NOT EXISTS "
                "(SELECT 1 FROM event_push_actions x WHERE x.user_id = ? "
                "AND x.event_id = n.event_id)" + where.format("n")
            )
            sql = f"{own} UNION ALL {shared} ORDER BY 3 DESC LIMIT ?"
            args = [user_id, *filters, user_id, user_id, user_id, user_id, *filters, limit]
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
