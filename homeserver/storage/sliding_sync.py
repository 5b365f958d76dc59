"""SQL for simplified sliding sync: the user's rooms with their list order, and each
connection's positions and what it has sent of each room."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from homeserver.storage.engine import Database, Txn

# How many characters of the connection's key start each of its positions.
POS_PREFIX = 8


class RoomMembership(NamedTuple):
    """The user's membership in a room (a tuple: thousands are read per request)."""

    room_id: str
    membership: str
    sender: str
    stream: int
    forgotten: bool
    event_id: str
    bump_stamp: int  # the room's; 0 when we hold no event that bumps it

    @property
    def list_stamp(self) -> int:
        """Where the room sorts for this user: its latest activity if joined, else the
        moment the membership changed."""
        if self.membership == "join":
            return self.bump_stamp or self.stream
        return self.stream


@dataclass(frozen=True)
class SentRoom:
    """What a connection has sent of a room: events up to ``sent_stream``, while the
    user's membership was the one at ``membership_stream``, with this room config."""

    sent_stream: int
    membership_stream: int
    timeline_limit: int
    required_state: str


class SlidingSyncStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # The user's rooms

    async def get_memberships(self, user_id: str) -> list[RoomMembership]:
        """The user's current membership in every room they have one in."""
        rows = await self.db.run(
            "sliding_sync_memberships",
            lambda txn: txn.select(
                "SELECT c.room_id, c.membership, m.sender, m.stream_ordering, m.forgotten, "
                "c.event_id, COALESCE(r.bump_stamp, 0) "
                "FROM current_state c JOIN room_memberships m ON m.event_id = c.event_id "
                "LEFT JOIN rooms r ON r.room_id = c.room_id "
                "WHERE c.type = 'm.room.member' AND c.state_key = ?",
                (user_id,),
            ),
        )
        return [RoomMembership(*r) for r in rows]

    async def get_state_of_type(
        self, room_ids: Sequence[str], event_type: str
    ) -> dict[str, list[tuple[str, str]]]:
        """(state_key, event ID) of the current state events of one type in each room."""
        if not room_ids:
            return {}
        marks = ",".join("?" * len(room_ids))
        rows = await self.db.run(
            "get_state_of_type",
            lambda txn: txn.select(
                f"SELECT room_id, state_key, event_id FROM current_state "
                f"WHERE room_id IN ({marks}) AND type = ?",
                (*room_ids, event_type),
            ),
        )
        found: dict[str, list[tuple[str, str]]] = {}
        for room_id, state_key, event_id in rows:
            found.setdefault(room_id, []).append((state_key, event_id))
        return found

    async def get_room_state_ids(
        self, room_ids: Sequence[str], members: set[str], all_members: set[str]
    ) -> dict[str, dict[tuple[str, str], str]]:
        """Current state of several rooms: every event but member events, the member events
        of ``members``, and every member event of the rooms in ``all_members``."""
        if not room_ids:
            return {}
        marks = ",".join("?" * len(room_ids))
        columns = "SELECT room_id, type, state_key, event_id FROM current_state"

        def txn_fn(txn: Txn) -> list[tuple[str, str, str, str]]:
            rows = txn.select(
                f"{columns} WHERE room_id IN ({marks}) AND type <> 'm.room.member'",
                list(room_ids),
            )
            if members:
                who = ",".join("?" * len(members))
                rows += txn.select(
                    f"{columns} WHERE room_id IN ({marks}) AND type = 'm.room.member' "
                    f"AND state_key IN ({who})",
                    [*room_ids, *members],
                )
            if all_members:
                every = ",".join("?" * len(all_members))
                rows += txn.select(
                    f"{columns} WHERE room_id IN ({every}) AND type = 'm.room.member'",
                    list(all_members),
                )
            return [(r[0], r[1], r[2], r[3]) for r in rows]

        found: dict[str, dict[tuple[str, str], str]] = {r: {} for r in room_ids}
        for room_id, event_type, state_key, event_id in await self.db.run(
            "get_room_state_ids", txn_fn
        ):
            found[room_id][(event_type, state_key)] = event_id
        return found

    async def get_latest_streams(
        self, room_ids: Sequence[str], after: int, upto: int
    ) -> dict[str, int]:
        """Each room's newest stream position in (after, upto], for rooms with one."""
        marks = ",".join("?" * len(room_ids))
        rows = await self.db.run(
            "get_latest_streams",
            lambda txn: txn.select(
                f"SELECT room_id, MAX(stream_ordering) FROM events WHERE room_id IN ({marks}) "
                f"AND stream_ordering > ? AND stream_ordering <= ? GROUP BY room_id",
                (*room_ids, after, upto),
            ),
        )
        return {r[0]: int(r[1]) for r in rows}

    async def get_state_changes(
        self, room_ids: Sequence[str], after: int, before: int
    ) -> dict[str, list[str]]:
        """IDs of the state events sent in each room in (after, before)."""
        if not room_ids:
            return {}
        marks = ",".join("?" * len(room_ids))
        rows = await self.db.run(
            "get_state_changes_many",
            lambda txn: txn.select(
                f"SELECT room_id, event_id FROM events WHERE room_id IN ({marks}) "
                f"AND state_key IS NOT NULL AND stream_ordering > ? AND stream_ordering < ? "
                f"AND rejected = 0",
                (*room_ids, after, before),
            ),
        )
        found: dict[str, list[str]] = {}
        for room_id, event_id in rows:
            found.setdefault(room_id, []).append(event_id)
        return found

    # Connections

    async def new_connection(
        self, user_id: str, device_id: str, conn_id: str, now_ms: int, keep: int
    ) -> str:
        """Start a connection afresh (forgetting one with the same ``conn_id``), keeping at
        most ``keep`` connections per device (the least recently used go)."""
        key = secrets.token_hex(12)

        def txn_fn(txn: Txn) -> str:
            old = txn.select(
                "SELECT connection_key FROM sliding_sync_connections WHERE user_id = ? "
                "AND device_id = ? ORDER BY last_used_ts DESC",
                (user_id, device_id),
            )
            existing = txn.select_one(
                "SELECT connection_key FROM sliding_sync_connections WHERE user_id = ? "
                "AND device_id = ? AND conn_id = ?",
                (user_id, device_id, conn_id),
            )
            doomed = [r[0] for r in old[max(keep - 1, 0) :]]
            if existing is not None and existing[0] not in doomed:
                doomed.append(existing[0])
            _delete_connections(txn, doomed)
            txn.execute(
                "INSERT INTO sliding_sync_connections (connection_key, user_id, device_id, "
                "conn_id, last_pos, last_used_ts) VALUES (?, ?, ?, ?, 0, ?)",
                (key, user_id, device_id, conn_id, now_ms),
            )
            return key

        return await self.db.run("new_sliding_sync_connection", txn_fn)

    async def resume(
        self,
        user_id: str,
        device_id: str,
        conn_id: str,
        prefix: str,
        pos: int,
        used_since_ms: int,
        now_ms: int,
    ) -> tuple[str, str, dict[str, SentRoom]] | None:
        """Carry a connection on from a position the client sent (``<key prefix>.<pos>``):
        its key, the stream token of that position, and what it had sent then; None if the
        connection or position is unknown, or the connection unused since before
        ``used_since_ms``. The position is confirmed (see ``_confirm``)."""

        def txn_fn(txn: Txn) -> tuple[str, str, dict[str, SentRoom]] | None:
            row = txn.select_one(
                "SELECT connection_key, last_used_ts FROM sliding_sync_connections "
                "WHERE user_id = ? AND device_id = ? AND conn_id = ?",
                (user_id, device_id, conn_id),
            )
            if row is None or int(row[1]) < used_since_ms or not str(row[0]).startswith(prefix):
                return None
            key = str(row[0])
            token = txn.select_one(
                "SELECT token FROM sliding_sync_positions WHERE connection_key = ? AND pos = ?",
                (key, pos),
            )
            if token is None:
                return None
            return key, str(token[0]), _confirm(txn, key, pos, now_ms)

        return await self.db.run("resume_sliding_sync", txn_fn)

    async def add_position(
        self, key: str, token: str, rooms: dict[str, SentRoom], now_ms: int
    ) -> int | None:
        """A new position answering with these rooms sent; None when the connection is
        gone (replaced by a newer start of the same ``conn_id``)."""

        def txn_fn(txn: Txn) -> int | None:
            txn.execute(
                "UPDATE sliding_sync_connections SET last_pos = last_pos + 1, last_used_ts = ? "
                "WHERE connection_key = ?",
                (now_ms, key),
            )
            row = txn.select_one(
                "SELECT last_pos FROM sliding_sync_connections WHERE connection_key = ?", (key,)
            )
            if row is None:
                return None
            pos = int(row[0])
            txn.execute(
                "INSERT INTO sliding_sync_positions (connection_key, pos, token) VALUES (?, ?, ?)",
                (key, pos, token),
            )
            txn.execute_many(
                "INSERT INTO sliding_sync_rooms (connection_key, pos, room_id, sent_stream, "
                "membership_stream, timeline_limit, required_state) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (key, pos, room_id, s.sent_stream, s.membership_stream, s.timeline_limit,
                     s.required_state)
                    for room_id, s in rooms.items()
                ],
            )  # fmt: skip
            return pos

        return await self.db.run("add_sliding_sync_position", txn_fn)

    async def expire_connections(self, unused_since_ms: int) -> int:
        def txn_fn(txn: Txn) -> int:
            keys = [
                r[0]
                for r in txn.select(
                    "SELECT connection_key FROM sliding_sync_connections WHERE last_used_ts < ?",
                    (unused_since_ms,),
                )
            ]
            _delete_connections(txn, keys)
            return len(keys)

        return await self.db.run("expire_sliding_sync_connections", txn_fn)

    async def delete_for_device(self, user_id: str, device_id: str) -> None:
        def txn_fn(txn: Txn) -> None:
            keys = [
                r[0]
                for r in txn.select(
                    "SELECT connection_key FROM sliding_sync_connections WHERE user_id = ? "
                    "AND device_id = ?",
                    (user_id, device_id),
                )
            ]
            _delete_connections(txn, keys)

        await self.db.run("delete_sliding_sync_for_device", txn_fn)


def _confirm(txn: Txn, key: str, pos: int, now_ms: int) -> dict[str, SentRoom]:
    """The client has what ``pos`` answered: forget every other position (answers it never
    processed, and older ones), keep one row per room, and return them."""
    txn.execute(
        "DELETE FROM sliding_sync_positions WHERE connection_key = ? AND pos <> ?", (key, pos)
    )
    txn.execute("DELETE FROM sliding_sync_rooms WHERE connection_key = ? AND pos > ?", (key, pos))
    rows = txn.select(
        "SELECT room_id, pos, sent_stream, membership_stream, timeline_limit, required_state "
        "FROM sliding_sync_rooms WHERE connection_key = ? ORDER BY room_id, pos",
        (key,),
    )
    latest: dict[str, tuple[int, SentRoom]] = {}
    for room_id, row_pos, sent, member, limit, state in rows:
        latest[room_id] = (int(row_pos), SentRoom(int(sent), int(member), int(limit), state))
    txn.execute_many(
        "DELETE FROM sliding_sync_rooms WHERE connection_key = ? AND room_id = ? AND pos = ?",
        [
            (key, room_id, row_pos)
            for room_id, row_pos, *_ in rows
            if int(row_pos) < latest[room_id][0]
        ],
    )
    txn.execute(
        "UPDATE sliding_sync_connections SET last_used_ts = ? WHERE connection_key = ?",
        (now_ms, key),
    )
    return {room_id: sent for room_id, (_, sent) in latest.items()}


def _delete_connections(txn: Txn, keys: Sequence[str]) -> None:
    for table in ("sliding_sync_rooms", "sliding_sync_positions", "sliding_sync_connections"):
        txn.execute_many(f"DELETE FROM {table} WHERE connection_key = ?", [(k,) for k in keys])
