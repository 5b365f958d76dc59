"""SQL for room events, the DAG, state groups and current state."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from homeserver.caches import MeasuredLRU
from homeserver.storage.engine import Database, Row, Txn, escape_like
from homeserver.storage.push import EventNotifications, store_notifications_txn
from rooms.sliding_sync import BUMP_TYPES

StateKey = tuple[str, str]
StateIds = dict[StateKey, str]

# A delta chain longer than this is cut by writing the whole state as a new snapshot.
MAX_STATE_CHAIN = 50


@dataclass(slots=True)
class StoredEvent:
    """An event as stored: its signed JSON, verbatim, and what the server knows about it."""

    event_id: str
    room_id: str
    stream_ordering: int
    json_text: str
    state_before: int
    state_after: int
    rejected: bool
    replaces_state: str | None = None
    redacted_by: list[str] = field(default_factory=list)
    _data: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def is_outlier(self) -> bool:
        """Known only as auth or state of other events: in no timeline, no state of its own."""
        return self.stream_ordering == 0

    @property
    def data(self) -> dict[str, Any]:
        """The parsed JSON with ``event_id`` attached (room v3+ do not carry it signed),
        without ``signatures`` and ``hashes``: a stored event is served to other servers
        as ``json_text``, verbatim, and they are half of a message's parsed size. (What
        needs them, a room v1/v2 reference hash, parses ``json_text`` itself.)"""
        parsed = self._data
        if parsed is None:
            parsed = parse_event_json(self.json_text)
            parsed.setdefault("event_id", self.event_id)
            parsed.pop("signatures", None)
            parsed.pop("hashes", None)
            share_repeated_strings(parsed)
            # This record's own copies go too where they are the same.
            if parsed["event_id"] == self.event_id:
                self.event_id = parsed["event_id"]
            if parsed.get("room_id") == self.room_id:
                self.room_id = parsed["room_id"]
            self._data = parsed
            _keep_parsed(self)
        return parsed

    def forget_parsed(self) -> None:
        """Drop the parsed JSON (parsed again from the text if read again): the event left
        the event cache, or its content was erased."""
        if self._data is not None:
            self._data = None
            if _parsed is not None:
                _parsed.pop(id(self), None)


class _ParsedEvents(MeasuredLRU[int, StoredEvent]):
    """The events whose parsed JSON is kept, the most recently parsed last (by parse, not
    by use): parsing one more drops the parsed JSON of the first. The event cache holds
    more events than this, as their stored text (about as large as the parsed form); a
    request reads each event's fields many times in a short while, and an event read again
    later is parsed again (a few microseconds). A request that reads more events than this
    parses some of them again on each pass (a whole 20,000-member room's state)."""

    def popitem(self) -> tuple[int, StoredEvent]:
        key, event = super().popitem()
        event._data = None
        return key, event


_parsed: _ParsedEvents | None = None


def _keep_parsed(event: StoredEvent) -> None:
    global _parsed
    if _parsed is None:  # built on first use: the configured size is known by then
        _parsed = _ParsedEvents("parsed_events")
    _parsed[id(event)] = event


# Fields whose values recur across the cached events of a room: its ID, its senders and
# event types, and the event IDs that events cite (the same few auth events, and each
# event's predecessor, itself cached).
_SHARED_FIELDS = ("event_id", "room_id", "sender", "type")
_SHARED_LISTS = ("auth_events", "prev_events")
# One copy of each recurring string: a table of our own, bounded (emptied when full), not
# sys.intern, whose strings some CPython 3.12 releases never free (measured on 3.12.1:
# every event ID ever parsed would stay).
_SHARED_LIMIT = 20_000
_shared: dict[str, str] = {}


def _one_copy(value: str) -> str:
    if len(_shared) >= _SHARED_LIMIT:
        _shared.clear()
    return _shared.setdefault(value, value)


def share_repeated_strings(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its recurring strings replaced by one shared copy each (0.6 KiB of a
    cached message's parsed form; the event cache holds thousands)."""
    for name in _SHARED_FIELDS:
        value = data.get(name)
        if type(value) is str:
            data[name] = _one_copy(value)
    for name in _SHARED_LISTS:
        items = data.get(name)
        if type(items) is list:
            data[name] = [_one_copy(i) if type(i) is str else i for i in items]
    return data


def parse_event_json(text: str) -> dict[str, Any]:
    """msgspec where it can (a third less memory than the json module's dicts, which matters
    for the event cache, and faster); the json module for what msgspec refuses and an event
    from another server may hold (a lone surrogate escape, a number beyond a double)."""
    try:
        parsed = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        parsed = json.loads(text)
    assert isinstance(parsed, dict)
    return parsed


_TXN_EVENT_SQL = (
    "SELECT event_id FROM event_transactions WHERE user_id = ? AND device_id = ? AND scope = ? "
    "AND txn_id = ?"
)


class TransactionAlreadySent(Exception):
    """The client transaction ``txn`` of an event being persisted already made
    ``event_id``: that event, and its room's events after it, were not written."""

    def __init__(self, event_id: str, txn: TxnKey) -> None:
        super().__init__(event_id)
        self.event_id = event_id
        self.txn = txn


class TxnKey(NamedTuple):
    """A client transaction: the same ID on the same path from the same device is a retry."""

    user_id: str
    device_id: str
    scope: str
    txn_id: str


@dataclass(frozen=True)
class NewStateGroup:
    group_id: int
    prev_group: int | None
    chain_length: int
    entries: StateIds


@dataclass
class EventToPersist:
    event_id: str
    room_id: str
    event_type: str
    state_key: str | None
    sender: str
    depth: int
    origin_server_ts: int
    json_text: str
    prev_event_ids: list[str]
    auth_event_ids: list[str]
    stream_ordering: int
    state_before: int
    state_after: int
    new_state_group: NewStateGroup | None
    membership: str | None
    current_state_update: bool
    replaces_state: str | None = None
    txn: TxnKey | None = None
    redacts: str | None = None
    # (parent event ID, rel_type) from content.m.relates_to
    relation: tuple[str, str] | None = None
    # (key, text) to index for full-text search (unencrypted bodies, names, topics)
    search: tuple[str, str] | None = None
    # Notifications the event makes (its room's shared answer and members' own rows)
    notifications: EventNotifications | None = None
    # The room's whole current state after this event, when it is not this event's change
    # on top of the previous one (the first event we hold of a room joined over federation,
    # or a merge of forks): (type, state_key) -> (event ID, membership).
    replace_current_state: dict[StateKey, tuple[str, str | None]] | None = None
    # Fetched history older than anything we held: placed before the room's first event
    # (a negative stream position), changing neither extremities nor current state.
    backfilled: bool = False


_EVENT_COLUMNS = (
    "event_id, room_id, stream_ordering, json, state_before, state_after, rejected, replaces_state"
)


def _stored(row: Row) -> StoredEvent:
    return StoredEvent(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7])


def _insert_state_group(txn: Txn, room_id: str, group: NewStateGroup) -> None:
    txn.execute(
        "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (?, ?, ?, ?)",
        (group.group_id, room_id, group.prev_group, group.chain_length),
    )
    txn.execute_many(
        "INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES (?, ?, ?, ?)",
        [(group.group_id, t, k, e) for (t, k), e in group.entries.items()],
    )


def _index_for_search(
    txn: Txn, event_id: str, room_id: str, stream: int, key: str, value: str
) -> None:
    if txn.engine.name == "postgres":
        txn.execute(
            "INSERT INTO event_search (event_id, room_id, key, stream_ordering, value, vector) "
            "VALUES (?, ?, ?, ?, ?, to_tsvector('simple', ?)) ON CONFLICT (event_id) DO NOTHING",
            (event_id, room_id, key, stream, value, value),
        )
    else:
        txn.execute(
            "INSERT INTO event_search (event_id, room_id, key, stream_ordering, value) "
            "VALUES (?, ?, ?, ?, ?)",
            (event_id, room_id, key, stream, value),
        )


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Start-up positions

    async def get_max_positions(self) -> tuple[int, int]:
        """(highest stream ordering, highest state group id)."""

        def txn_fn(txn: Txn) -> tuple[int, int]:
            stream = txn.select_one("SELECT MAX(stream_ordering) FROM events")
            group = txn.select_one("SELECT MAX(id) FROM state_groups")
            return (
                int(stream[0]) if stream and stream[0] is not None else 0,
                int(group[0]) if group and group[0] is not None else 0,
            )

        return await self.db.run("get_max_positions", txn_fn)

    # Rooms

    async def store_room(self, room_id: str, version: str, creator: str, now_ms: int) -> bool:
        """Record a new room; False if the room ID is already taken."""

        def txn_fn(txn: Txn) -> bool:
            if txn.select_one("SELECT 1 FROM rooms WHERE room_id = ?", (room_id,)):
                return False
            txn.execute(
                "INSERT INTO rooms (room_id, room_version, creator, created_ts) "
                "VALUES (?, ?, ?, ?)",
                (room_id, version, creator, now_ms),
            )
            return True

        return await self.db.run("store_room", txn_fn)

    async def get_room(self, room_id: str) -> tuple[str, str, bool] | None:
        row = await self.db.run(
            "get_room",
            lambda txn: txn.select_one(
                "SELECT room_version, creator, is_public FROM rooms WHERE room_id = ?", (room_id,)
            ),
        )
        return (row[0], row[1], bool(row[2])) if row else None

    async def set_room_public(self, room_id: str, public: bool) -> None:
        await self.db.run(
            "set_room_public",
            lambda txn: txn.execute(
                "UPDATE rooms SET is_public = ? WHERE room_id = ?", (int(public), room_id)
            ),
        )

    async def get_public_room_ids(self) -> list[str]:
        rows = await self.db.run(
            "get_public_room_ids",
            lambda txn: txn.select("SELECT room_id FROM rooms WHERE is_public = 1"),
        )
        return [r[0] for r in rows]

    # Persisting

    async def persist_event(self, ev: EventToPersist) -> None:
        """Write the event, its edges, its state and the room's new extremity at once."""
        for refusal in await self.persist_events([ev]):
            raise refusal

    async def persist_events(self, evs: list[EventToPersist]) -> list[TransactionAlreadySent]:
        return await self.db.run("persist_events", persist_events_txn, evs)

    async def persist_state_group(self, room_id: str, group: NewStateGroup) -> None:
        await self.db.run("persist_state_group", _insert_state_group, room_id, group)

    # Reading events

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return {}

        def txn_fn(txn: Txn) -> dict[str, StoredEvent]:
            found: dict[str, StoredEvent] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in txn.select(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_id IN ({marks})", chunk
                ):
                    found[row[0]] = _stored(row)
                for event_id, redacted_by in txn.select(
                    f"SELECT event_id, redacted_by FROM redactions WHERE event_id IN ({marks})",
                    chunk,
                ):
                    if event_id in found:
                        found[event_id].redacted_by.append(redacted_by)
                missing = [e for e in chunk if e not in found]
                if missing:
                    marks = ",".join("?" * len(missing))
                    for event_id, room_id, json_text, rejected in txn.select(
                        "SELECT event_id, room_id, json, rejected FROM event_outliers "
                        f"WHERE event_id IN ({marks})",
                        missing,
                    ):
                        found[event_id] = StoredEvent(
                            event_id, room_id, 0, json_text, 0, 0, bool(rejected)
                        )
            return found

        return await self.db.run("get_events", txn_fn)

    async def get_room_event_ids(
        self,
        room_id: str,
        after: int | None,
        before: int | None,
        backwards: bool,
        limit: int,
        types: Sequence[str] | None = None,
        senders: Sequence[str] | None = None,
    ) -> list[tuple[str, int]]:
        """(event_id, stream) in ``(after, before)``, newest first if ``backwards``."""
        sql = "SELECT event_id, stream_ordering FROM events WHERE room_id = ? AND rejected = 0"
        args: list[Any] = [room_id]
        if after is not None:
            sql += " AND stream_ordering > ?"
            args.append(after)
        if before is not None:
            sql += " AND stream_ordering < ?"
            args.append(before)
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            args.extend(types)
        if senders:
            sql += f" AND sender IN ({','.join('?' * len(senders))})"
            args.extend(senders)
        sql += f" ORDER BY stream_ordering {'DESC' if backwards else 'ASC'} LIMIT ?"
        args.append(limit)
        rows = await self.db.run("get_room_event_ids", lambda txn: txn.select(sql, args))
        return [(r[0], int(r[1])) for r in rows]

    async def purge_room(self, room_id: str) -> int:
        """Delete everything the server holds of a room (users' key backups excepted: they
        are theirs); returns the number of events removed."""

        def txn_fn(txn: Txn) -> int:
            row = txn.select_one("SELECT COUNT(*) FROM events WHERE room_id = ?", (room_id,))
            in_room = "(SELECT event_id FROM events WHERE room_id = ?)"
            for sql in (
                f"DELETE FROM event_edges WHERE event_id IN {in_room}",
                f"DELETE FROM event_auth WHERE event_id IN {in_room}",
                f"DELETE FROM redactions WHERE event_id IN {in_room}",
                f"DELETE FROM event_transactions WHERE event_id IN {in_room}",
                "DELETE FROM state_group_entries WHERE group_id IN "
                "(SELECT id FROM state_groups WHERE room_id = ?)",
            ):
                txn.execute(sql, (room_id,))
            for table in (
                "event_search", "event_relations", "event_push_actions", "event_notifications",
                "receipts",
                "state_groups", "current_state", "room_memberships", "forward_extremities",
                "room_aliases", "event_outliers", "invite_room_state", "federation_outbox",
                "account_data", "events", "rooms",
            ):  # fmt: skip
                txn.execute(f"DELETE FROM {table} WHERE room_id = ?", (room_id,))
            return int(row[0]) if row else 0

        return await self.db.run("purge_room", txn_fn)

    async def last_event_before_ts(self, room_id: str, ts: int) -> tuple[str, int] | None:
        """(event ID, stream position) of the room's last event sent before `ts`."""
        row = await self.db.run(
            "last_event_before_ts",
            lambda txn: txn.select_one(
                "SELECT event_id, stream_ordering FROM events WHERE room_id = ? "
                "AND origin_server_ts < ? ORDER BY stream_ordering DESC LIMIT 1",
                (room_id, ts),
            ),
        )
        return (str(row[0]), int(row[1])) if row else None

    async def purge_history_batch(
        self, room_id: str, before: int, keep_senders_of: str | None, limit: int
    ) -> list[str]:
        """Delete up to `limit` of the room's non-state events older than stream position
        `before` (never a forward extremity; never one sent by a user of `keep_senders_of`,
        when given); returns their IDs. State events stay: state and auth chains need them."""
        where = (
            "e.room_id = ? AND e.stream_ordering < ? AND e.state_key IS NULL AND NOT EXISTS "
            "(SELECT 1 FROM forward_extremities f WHERE f.room_id = e.room_id "
            "AND f.event_id = e.event_id)"
        )
        args: list[Any] = [room_id, before]
        if keep_senders_of is not None:
            where += " AND e.sender NOT LIKE ? ESCAPE '\\'"
            args.append("%:" + escape_like(keep_senders_of))

        def txn_fn(txn: Txn) -> list[str]:
            rows = txn.select(
                f"SELECT e.event_id FROM events e WHERE {where} ORDER BY e.stream_ordering LIMIT ?",
                (*args, limit),
            )
            ids = [str(r[0]) for r in rows]
            if ids:
                marks = ", ".join("?" for _ in ids)
                for table in (
                    "event_edges", "event_auth", "redactions", "event_transactions",
                    "event_search", "event_relations", "event_push_actions",
                    "event_notifications", "events",
                ):  # fmt: skip
                    txn.execute(f"DELETE FROM {table} WHERE event_id IN ({marks})", ids)
            return ids

        return await self.db.run("purge_history_batch", txn_fn)

    async def get_min_stream_ordering(self) -> int:
        row = await self.db.run(
            "get_min_stream_ordering",
            lambda txn: txn.select_one("SELECT MIN(stream_ordering) FROM events"),
        )
        return int(row[0]) if row and row[0] is not None else 0

    async def get_backward_extremities(self, room_id: str, limit: int) -> list[str]:
        """Events the room's oldest events we hold point back to but we do not hold (in a
        timeline): where fetched history would continue, oldest first."""
        rows = await self.db.run(
            "get_backward_extremities",
            lambda txn: txn.select(
                "SELECT g.prev_event_id, MIN(e.stream_ordering) FROM event_edges g "
                "JOIN events e ON e.event_id = g.event_id "
                "LEFT JOIN events p ON p.event_id = g.prev_event_id "
                "WHERE e.room_id = ? AND p.event_id IS NULL "
                "GROUP BY g.prev_event_id ORDER BY MIN(e.stream_ordering) LIMIT ?",
                (room_id, limit),
            ),
        )
        return [r[0] for r in rows]

    async def get_event_by_timestamp(self, room_id: str, ts: int, forwards: bool) -> str | None:
        if forwards:
            sql = (
                "SELECT event_id FROM events WHERE room_id = ? AND origin_server_ts >= ? "
                "AND rejected = 0 ORDER BY origin_server_ts ASC, stream_ordering ASC LIMIT 1"
            )
        else:
            sql = (
                "SELECT event_id FROM events WHERE room_id = ? AND origin_server_ts <= ? "
                "AND rejected = 0 ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT 1"
            )
        row = await self.db.run(
            "get_event_by_timestamp", lambda txn: txn.select_one(sql, (room_id, ts))
        )
        return row[0] if row else None

    async def get_txn_event_id(self, key: TxnKey) -> str | None:
        """The event a client transaction made, if it made one."""
        row = await self.db.run(
            "get_txn_event_id",
            lambda txn: txn.select_one(_TXN_EVENT_SQL, tuple(key)),
        )
        return str(row[0]) if row else None

    async def get_txn_ids(self, event_ids: Sequence[str]) -> dict[str, TxnKey]:
        if not event_ids:
            return {}
        marks = ",".join("?" * len(event_ids))
        rows = await self.db.run(
            "get_txn_ids",
            lambda txn: txn.select(
                f"SELECT event_id, user_id, device_id, scope, txn_id FROM event_transactions "
                f"WHERE event_id IN ({marks})",
                list(event_ids),
            ),
        )
        return {r[0]: TxnKey(r[1], r[2], r[3], r[4]) for r in rows}

    # State

    async def get_forward_extremities(self, room_id: str) -> list[str]:
        rows = await self.db.run(
            "get_forward_extremities",
            lambda txn: txn.select(
                "SELECT event_id FROM forward_extremities WHERE room_id = ?", (room_id,)
            ),
        )
        return [r[0] for r in rows]

    async def delete_forward_extremities(self, room_id: str, event_ids: list[str]) -> None:
        await self.db.run(
            "delete_forward_extremities",
            lambda txn: txn.execute_many(
                "DELETE FROM forward_extremities WHERE room_id = ? AND event_id = ?",
                [(room_id, e) for e in event_ids],
            ),
        )

    async def get_state_group(self, group_id: int) -> StateIds:
        """The full state of a group: walk its delta chain back to a snapshot."""

        def txn_fn(txn: Txn) -> StateIds:
            state: StateIds = {}
            current: int | None = group_id
            while current is not None:
                for t, k, e in txn.select(
                    "SELECT type, state_key, event_id FROM state_group_entries WHERE group_id = ?",
                    (current,),
                ):
                    state.setdefault((t, k), e)
                row = txn.select_one("SELECT prev_group FROM state_groups WHERE id = ?", (current,))
                current = row[0] if row else None
            return state

        return await self.db.run("get_state_group", txn_fn)

    async def get_state_group_chain_length(self, group_id: int) -> int:
        row = await self.db.run(
            "get_state_group_chain_length",
            lambda txn: txn.select_one(
                "SELECT chain_length FROM state_groups WHERE id = ?", (group_id,)
            ),
        )
        return int(row[0]) if row else 0

    async def get_current_state_ids(self, room_id: str) -> StateIds:
        rows = await self.db.run(
            "get_current_state_ids",
            lambda txn: txn.select(
                "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?",
                (room_id,),
            ),
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def get_current_state_ids_for(self, room_id: str, keys: Sequence[StateKey]) -> StateIds:
        """Only the given entries of the room's current state (each one primary-key look-up:
        a question about two entries must not read a large room's every member)."""
        if not keys:
            return {}
        where = " OR ".join("(type = ? AND state_key = ?)" for _ in keys)
        rows = await self.db.run(
            "get_current_state_ids_for",
            lambda txn: txn.select(
                f"SELECT type, state_key, event_id FROM current_state WHERE room_id = ? "
                f"AND ({where})",
                (room_id, *[part for key in keys for part in key]),
            ),
        )
        return {(r[0], r[1]): r[2] for r in rows}

    # Memberships

    async def get_rooms_for_user(self, user_id: str, memberships: Sequence[str]) -> list[str]:
        marks = ",".join("?" * len(memberships))
        rows = await self.db.run(
            "get_rooms_for_user",
            lambda txn: txn.select(
                f"SELECT room_id FROM current_state WHERE type = 'm.room.member' "
                f"AND state_key = ? AND membership IN ({marks})",
                (user_id, *memberships),
            ),
        )
        return [r[0] for r in rows]

    async def own_messages_before(
        self, room_id: str, user_id: str, before_ts: int, limit: int
    ) -> list[str]:
        """The user's messages (not state, not redactions) in the room sent before
        ``before_ts`` and not redacted yet, oldest first."""
        rows = await self.db.run(
            "own_messages_before",
            lambda txn: txn.select(
                "SELECT e.event_id FROM events e WHERE e.room_id = ? AND e.sender = ? "
                "AND e.origin_server_ts < ? AND e.state_key IS NULL AND e.rejected = 0 "
                "AND e.type <> 'm.room.redaction' AND NOT EXISTS (SELECT 1 FROM redactions r "
                "WHERE r.event_id = e.event_id) ORDER BY e.stream_ordering LIMIT ?",
                (room_id, user_id, before_ts, limit),
            ),
        )
        return [r[0] for r in rows]

    async def rooms_ever_in(self, user_id: str) -> list[str]:
        """Every room the user has had a membership in (joined, invited, left...)."""
        rows = await self.db.run(
            "rooms_ever_in",
            lambda txn: txn.select(
                "SELECT room_id, MIN(stream_ordering) FROM room_memberships WHERE user_id = ? "
                "GROUP BY room_id ORDER BY MIN(stream_ordering)",
                (user_id,),
            ),
        )
        return [r[0] for r in rows]

    async def get_joined_users(self, room_id: str) -> list[str]:
        rows = await self.db.run(
            "get_joined_users",
            lambda txn: txn.select(
                "SELECT state_key FROM current_state WHERE room_id = ? "
                "AND type = 'm.room.member' AND membership = 'join'",
                (room_id,),
            ),
        )
        return [r[0] for r in rows]

    async def get_member_summary(self, room_id: str) -> list[tuple[str, str]]:
        """(user, membership) of the room's joined and invited members."""
        rows = await self.db.run(
            "get_member_summary",
            lambda txn: txn.select(
                "SELECT state_key, membership FROM current_state WHERE room_id = ? "
                "AND type = 'm.room.member' AND membership IN ('join', 'invite')",
                (room_id,),
            ),
        )
        return [(r[0], r[1]) for r in rows]

    async def get_member_summaries(
        self, room_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, str]]]:
        """get_member_summary for many rooms in one query."""
        return await self.db.run("get_member_summaries", member_summaries_txn, room_ids)

    async def get_membership_records(
        self, user_id: str, room_ids: Sequence[str]
    ) -> dict[str, tuple[list[tuple[int, str]], bool]]:
        """get_membership_record for many rooms in one query."""
        return await self.db.run(
            "get_membership_records", membership_records_txn, user_id, room_ids
        )

    async def get_latest_event_ids(
        self, room_ids: Sequence[str], after: int | None, upto: int, limit: int
    ) -> dict[str, list[tuple[str, int]]]:
        return await self.db.run(
            "get_latest_event_ids", latest_event_ids_txn, room_ids, after, upto, limit
        )

    async def get_membership_history(self, user_id: str, room_id: str) -> list[tuple[int, str]]:
        """(stream ordering, membership) of each change of ``user_id`` in the room, oldest first."""
        rows = await self.db.run(
            "get_membership_history",
            lambda txn: txn.select(
                "SELECT stream_ordering, membership FROM room_memberships "
                "WHERE user_id = ? AND room_id = ? ORDER BY stream_ordering",
                (user_id, room_id),
            ),
        )
        return [(int(r[0]), r[1]) for r in rows]

    async def get_membership_record(
        self, user_id: str, room_id: str
    ) -> tuple[list[tuple[int, str]], bool]:
        """The user's membership record in the room (see membership_records_txn), and
        whether they have forgotten it."""
        records = await self.db.run(
            "get_membership_record", membership_records_txn, user_id, [room_id]
        )
        return records[room_id]

    async def has_forgotten(self, user_id: str, room_id: str) -> bool:
        """Whether the user forgot the room since their last membership change."""
        row = await self.db.run(
            "has_forgotten",
            lambda txn: txn.select_one(
                "SELECT forgotten FROM room_memberships WHERE user_id = ? AND room_id = ? "
                "ORDER BY stream_ordering DESC LIMIT 1",
                (user_id, room_id),
            ),
        )
        return bool(row and row[0])

    async def forget_room(self, user_id: str, room_id: str) -> None:
        await self.db.run(
            "forget_room",
            lambda txn: txn.execute(
                "UPDATE room_memberships SET forgotten = 1 WHERE user_id = ? AND room_id = ?",
                (user_id, room_id),
            ),
        )

    # Relations

    async def get_relations_of(self, parent_ids: Sequence[str]) -> list[RelationRow]:
        """(parent, rel_type, child, sender, stream) for every child of the given events."""
        if not parent_ids:
            return []
        return await self.db.run("get_relations_of", relations_of_txn, parent_ids)

    async def get_children(
        self,
        parent_id: str,
        rel_type: str | None,
        event_type: str | None,
        before: int | None,
        after: int | None,
        backwards: bool,
        limit: int,
    ) -> list[tuple[str, int]]:
        sql = "SELECT event_id, stream_ordering FROM event_relations WHERE relates_to_id = ?"
        args: list[Any] = [parent_id]
        for column, value in (("rel_type", rel_type), ("type", event_type)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        if before is not None:
            sql += " AND stream_ordering < ?"
            args.append(before)
        if after is not None:
            sql += " AND stream_ordering > ?"
            args.append(after)
        sql += f" ORDER BY stream_ordering {'DESC' if backwards else 'ASC'} LIMIT ?"
        args.append(limit)
        rows = await self.db.run("get_children", lambda txn: txn.select(sql, args))
        return [(r[0], int(r[1])) for r in rows]

    async def get_thread_roots(
        self, room_id: str, participant: str | None, before: int | None, limit: int
    ) -> list[tuple[str, int]]:
        """(root event ID, latest reply position), most recently active first."""
        sql = (
            "SELECT r.relates_to_id, MAX(r.stream_ordering) AS latest FROM event_relations r "
            "WHERE r.room_id = ? AND r.rel_type = 'm.thread'"
        )
        args: list[Any] = [room_id]
        if participant is not None:
            sql += (
                " AND r.relates_to_id IN (SELECT relates_to_id FROM event_relations WHERE "
                "rel_type = 'm.thread' AND sender = ? UNION SELECT event_id FROM events "
                "WHERE room_id = ? AND sender = ?)"
            )
            args += [participant, room_id, participant]
        sql += " GROUP BY r.relates_to_id"
        if before is not None:
            sql += " HAVING MAX(r.stream_ordering) < ?"
            args.append(before)
        sql += " ORDER BY latest DESC LIMIT ?"
        args.append(limit)
        rows = await self.db.run("get_thread_roots", lambda txn: txn.select(sql, args))
        return [(r[0], int(r[1])) for r in rows]

    # Aliases

    async def create_alias(self, alias: str, room_id: str, creator: str) -> bool:
        def txn_fn(txn: Txn) -> bool:
            if txn.select_one("SELECT 1 FROM room_aliases WHERE alias = ?", (alias,)):
                return False
            txn.execute(
                "INSERT INTO room_aliases (alias, room_id, creator) VALUES (?, ?, ?)",
                (alias, room_id, creator),
            )
            return True

        return await self.db.run("create_alias", txn_fn)

    async def get_alias(self, alias: str) -> tuple[str, str] | None:
        row = await self.db.run(
            "get_alias",
            lambda txn: txn.select_one(
                "SELECT room_id, creator FROM room_aliases WHERE alias = ?", (alias,)
            ),
        )
        return (row[0], row[1]) if row else None

    async def delete_alias(self, alias: str) -> None:
        await self.db.run(
            "delete_alias",
            lambda txn: txn.execute("DELETE FROM room_aliases WHERE alias = ?", (alias,)),
        )

    async def get_aliases_for_room(self, room_id: str) -> list[str]:
        rows = await self.db.run(
            "get_aliases_for_room",
            lambda txn: txn.select(
                "SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias", (room_id,)
            ),
        )
        return [r[0] for r in rows]


def user_memberships_txn(
    txn: Txn,
    user_id: str,
    memberships: Sequence[str] | None = None,
    room_ids: Sequence[str] | None = None,
) -> dict[str, str]:
    """Every room the user has a membership in (or only those of ``memberships``, or
    only ``room_ids``), with that membership."""
    sql = "SELECT room_id, membership FROM current_state WHERE type = 'm.room.member' "
    sql += "AND state_key = ?"
    args: list[str] = [user_id]
    if memberships is not None:
        sql += f" AND membership IN ({','.join('?' * len(memberships))})"
        args += memberships
    if room_ids is not None:
        sql += f" AND room_id IN ({','.join('?' * len(room_ids))})"
        args += room_ids
    return {r[0]: r[1] for r in txn.select(sql, args)}


def member_summaries_txn(txn: Txn, room_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    if not room_ids:
        return {}
    marks = ",".join("?" * len(room_ids))
    rows = txn.select(
        f"SELECT room_id, state_key, membership FROM current_state WHERE room_id IN "
        f"({marks}) AND type = 'm.room.member' AND membership IN ('join', 'invite')",
        list(room_ids),
    )
    result: dict[str, list[tuple[str, str]]] = {r: [] for r in room_ids}
    for room_id, user_id, membership in rows:
        result[room_id].append((user_id, membership))
    return result


def membership_records_txn(
    txn: Txn, user_id: str, room_ids: Sequence[str]
) -> dict[str, tuple[list[tuple[int, str]], bool]]:
    """Per room, what visibility checks need of the user's membership history: their
    latest join and their latest membership, as (stream, membership) oldest first, and
    whether they have forgotten the room. Not the whole history: every change of display
    name is another join, and a user who changes theirs often would make every sync read
    a longer one."""
    if not room_ids:
        return {}
    wanted = ",".join("(?)" for _ in room_ids)
    rows = txn.select(
        f"WITH wanted (room_id) AS (VALUES {wanted}) SELECT wanted.room_id, "
        f"(SELECT MAX(j.stream_ordering) FROM room_memberships j WHERE j.user_id = ? "
        f"AND j.room_id = wanted.room_id AND j.membership = 'join'), "
        f"latest.stream_ordering, latest.membership, latest.forgotten FROM wanted "
        f"JOIN room_memberships latest ON latest.user_id = ? AND latest.room_id = wanted.room_id "
        f"AND latest.stream_ordering = (SELECT MAX(m.stream_ordering) FROM room_memberships m "
        f"WHERE m.user_id = ? AND m.room_id = wanted.room_id)",
        (*room_ids, user_id, user_id, user_id),
    )
    result: dict[str, tuple[list[tuple[int, str]], bool]] = {r: ([], False) for r in room_ids}
    for room_id, last_join, stream, membership, forgotten in rows:
        history = [(int(last_join), "join")] if last_join is not None else []
        if int(stream) != last_join:
            history.append((int(stream), membership))
        result[room_id] = (history, bool(forgotten))
    return result


# (parent, rel_type, child, sender, stream ordering) of one relation.
RelationRow = tuple[str, str, str, str, int]


def relations_of_txn(txn: Txn, parent_ids: Sequence[str]) -> list[RelationRow]:
    """Every relation to the given events, oldest first (in chunks: an initial sync of
    many rooms asks about more events than SQLite takes parameters)."""
    rows: list[RelationRow] = []
    for start in range(0, len(parent_ids), 500):
        chunk = list(parent_ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        rows += txn.select(
            f"SELECT relates_to_id, rel_type, event_id, sender, stream_ordering "
            f"FROM event_relations WHERE relates_to_id IN ({marks}) ORDER BY stream_ordering",
            chunk,
        )
    if len(parent_ids) > 500:
        rows.sort(key=lambda row: row[4])
    return rows


def latest_event_ids_txn(
    txn: Txn, room_ids: Sequence[str], after: int | None, upto: int, limit: int
) -> dict[str, list[tuple[str, int]]]:
    """The newest ``limit`` events of each room in (after, upto], newest first: one short
    index range per room, so the cost follows the rooms and the page size, never the
    length of their histories (a window function over all rooms sorts every event). On
    PostgreSQL the ranges go in one statement (a lateral join); SQLite, in process, runs
    them one by one."""
    lower = after if after is not None else -1
    page = (
        "SELECT event_id, stream_ordering FROM events WHERE room_id = {room} "
        "AND stream_ordering <= ? AND stream_ordering > ? AND rejected = 0 "
        "ORDER BY stream_ordering DESC LIMIT ?"
    )
    result: dict[str, list[tuple[str, int]]] = {room_id: [] for room_id in room_ids}
    unique = list(result)
    if txn.engine.name == "postgres":
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            values = ",".join("(?)" for _ in chunk)
            for room_id, event_id, stream in txn.select(
                f"SELECT r.room_id, p.event_id, p.stream_ordering FROM (VALUES {values}) "
                f"AS r (room_id) CROSS JOIN LATERAL ({page.format(room='r.room_id')}) AS p "
                f"ORDER BY r.room_id, p.stream_ordering DESC",
                (*chunk, upto, lower, limit),
            ):
                result[room_id].append((event_id, int(stream)))
        return result
    for room_id in unique:
        result[room_id] = [
            (event_id, int(stream))
            for event_id, stream in txn.select(page.format(room="?"), (room_id, upto, lower, limit))
        ]
    return result


def persist_events_txn(txn: Txn, evs: list[EventToPersist]) -> list[TransactionAlreadySent]:
    """Write events, each room's in order, in one transaction (group commit). If an
    event's client transaction already made an event (a retry from before a restart),
    it and the events of its room after it (which cite it) are not written, and the
    refusal is returned; the other events are. Any other failure writes none."""
    refused = _claim_transactions(txn, evs)
    kept = [ev for i, ev in enumerate(evs) if i < refused.get(ev.room_id, (len(evs),))[0]]
    if len(kept) < len(evs):
        # The claims of events that follow a refused one in their room go too.
        kept_ids = {ev.event_id for ev in kept}
        dropped = [ev.event_id for ev in evs if ev.event_id not in kept_ids]
        txn.execute(
            f"DELETE FROM event_transactions WHERE event_id IN ({','.join('?' * len(dropped))})",
            dropped,
        )
    for ev in kept:
        _write_event(txn, ev)
    return [refusal for _, refusal in refused.values()]


def _claim_transactions(
    txn: Txn, evs: list[EventToPersist]
) -> dict[str, tuple[int, TransactionAlreadySent]]:
    """Record the events' client transactions first, in one statement, so that a retry
    the caller's memory no longer knows (older than it, from before a restart) is caught:
    per room, the position of its first event whose transaction already made another,
    with that refusal."""
    claiming = [ev for ev in evs if ev.txn is not None]
    if not claiming:
        return {}
    claimed = txn.select(
        "INSERT INTO event_transactions (user_id, device_id, scope, txn_id, event_id, "
        "created_ts) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(claiming)) + " "
        "ON CONFLICT (user_id, device_id, scope, txn_id) DO NOTHING RETURNING event_id",
        [v for ev in claiming for v in (*(ev.txn or ()), ev.event_id, ev.origin_server_ts)],
    )
    if len(claimed) == len(claiming):
        return {}
    written = {row[0] for row in claimed}
    refused: dict[str, tuple[int, TransactionAlreadySent]] = {}
    for i, ev in enumerate(evs):
        if ev.txn is None or ev.event_id in written or ev.room_id in refused:
            continue
        row = txn.select_one(_TXN_EVENT_SQL, tuple(ev.txn))
        assert row is not None  # the conflict was with this very row
        refused[ev.room_id] = (i, TransactionAlreadySent(str(row[0]), ev.txn))
    return refused


def _write_event(txn: Txn, ev: EventToPersist) -> None:
    """The event, its edges, its state and the room's new extremity."""
    txn.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, "
        "depth, origin_server_ts, json, state_before, state_after, replaces_state) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ev.stream_ordering, ev.event_id, ev.room_id, ev.event_type, ev.state_key,
            ev.sender, ev.depth, ev.origin_server_ts, ev.json_text, ev.state_before,
            ev.state_after, ev.replaces_state,
        ),
    )  # fmt: skip
    txn.execute_many(
        "INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?)",
        [(ev.event_id, p) for p in ev.prev_event_ids],
    )
    txn.execute_many(
        "INSERT INTO event_auth (event_id, auth_id) VALUES (?, ?)",
        [(ev.event_id, a) for a in ev.auth_event_ids],
    )
    txn.execute("DELETE FROM event_outliers WHERE event_id = ?", (ev.event_id,))
    if not ev.backfilled:
        for prev in ev.prev_event_ids:
            txn.execute(
                "DELETE FROM forward_extremities WHERE room_id = ? AND event_id = ?",
                (ev.room_id, prev),
            )
        txn.execute(
            "INSERT INTO forward_extremities (room_id, event_id) VALUES (?, ?)",
            (ev.room_id, ev.event_id),
        )
    if ev.new_state_group is not None:
        _insert_state_group(txn, ev.room_id, ev.new_state_group)
    if not ev.backfilled and ev.event_type in BUMP_TYPES:
        txn.execute(
            "UPDATE rooms SET bump_stamp = ? WHERE room_id = ? AND bump_stamp < ?",
            (ev.stream_ordering, ev.room_id, ev.stream_ordering),
        )
    if ev.backfilled:
        pass  # history from before what we held: the current state stays
    elif ev.replace_current_state is not None:
        txn.execute("DELETE FROM current_state WHERE room_id = ?", (ev.room_id,))
        txn.execute_many(
            "INSERT INTO current_state (room_id, type, state_key, event_id, membership) "
            "VALUES (?, ?, ?, ?, ?)",
            [(ev.room_id, t, k, e, m) for (t, k), (e, m) in ev.replace_current_state.items()],
        )
    elif ev.state_key is not None and ev.current_state_update:
        txn.execute(
            "INSERT INTO current_state (room_id, type, state_key, event_id, membership) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, type, state_key) DO UPDATE "
            "SET event_id = excluded.event_id, membership = excluded.membership",
            (ev.room_id, ev.event_type, ev.state_key, ev.event_id, ev.membership),
        )
    if ev.membership is not None and ev.state_key is not None:
        txn.execute(
            "INSERT INTO room_memberships (event_id, room_id, user_id, sender, "
            "membership, stream_ordering) VALUES (?, ?, ?, ?, ?, ?)",
            (ev.event_id, ev.room_id, ev.state_key, ev.sender, ev.membership,
             ev.stream_ordering),
        )  # fmt: skip
    if ev.relation is not None:
        txn.execute(
            "INSERT INTO event_relations (event_id, relates_to_id, rel_type, room_id, "
            "type, sender, stream_ordering) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ev.event_id, *ev.relation, ev.room_id, ev.event_type, ev.sender,
             ev.stream_ordering),
        )  # fmt: skip
    if ev.notifications is not None:
        store_notifications_txn(
            txn, ev.room_id, ev.event_id, ev.sender, ev.stream_ordering, ev.notifications
        )
    if ev.search is not None:
        _index_for_search(txn, ev.event_id, ev.room_id, ev.stream_ordering, *ev.search)
    if ev.redacts is not None:
        # A redacted event's text must not be findable any more.
        txn.execute("DELETE FROM event_search WHERE event_id = ?", (ev.redacts,))
        txn.execute(
            "INSERT INTO redactions (event_id, redacted_by) VALUES (?, ?) "
            "ON CONFLICT (event_id, redacted_by) DO NOTHING",
            (ev.redacts, ev.event_id),
        )
