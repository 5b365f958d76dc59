"""Creating, authorising and persisting room events, and reading them and their state back.

One drafter per room: a per-room lock serialises event creation so that each new event
points at the room's current forward extremity and sees exactly the state before it.

Group commit: a message (no state change, no redaction) is drafted on top of the room's
messages still being written, queued, and written with every event (of any room) queued
behind the transaction in flight in the next one; the lock is not held while it is
written, and the sender is answered once it is. Anything else waits for the room's
writes to finish and is queued alone, with the lock held until it is written, so every
later draft sees what it changed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock

from crypto.canonical import canonical_json
from homeserver.caches import MeasuredLRU
from homeserver.errors import Codes, MatrixError, forbidden, not_found
from homeserver.metrics import ROOM_EVENTS_PER_WRITE
from homeserver.storage.events import (
    MAX_STATE_CHAIN,
    EventToPersist,
    NewStateGroup,
    StateIds,
    StateKey,
    StoredEvent,
    TransactionAlreadySent,
    TxnKey,
    parse_event_json,
)
from homeserver.streams import StreamIdGenerator
from rooms.auth import AuthError, auth_types_for_event, check_auth, domain_of
from rooms.events import (
    MAX_EVENT_BYTES,
    check_event_numbers,
    compute_event_id,
    hash_sign_and_identify,
    names_hold_nul,
    reference_hash,
    relates_to,
    room_id_for_create_event,
)
from rooms.layered_state import derive_state, state_dict
from rooms.state_res import StateIds as StateView
from rooms.state_res import resolve_state
from rooms.versions import RoomVersion, get_room_version

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]


class MissingPrevEvents(Exception):
    """A received event's prev_events are not all known: the gap must be filled first."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"missing prev events: {missing}")
        self.missing = missing


class SoftFailed(Exception):
    """A received event is allowed by the state before it but not by the room's current
    state (e.g. its sender was banned meanwhile): kept, but never shown or built upon."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"{event_id} soft-failed: {reason}")
        self.event_id = event_id
        self.reason = reason


class EventRejected(Exception):
    """A received event fails the authorisation rules; it is kept only as rejected."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"{event_id} rejected: {reason}")
        self.event_id = event_id
        self.reason = reason


def reference_id(reference: Any) -> str:
    """The event ID in a prev/auth reference: an ID, or ``[id, hashes]`` in room v1/v2."""
    if isinstance(reference, list) and reference:
        return str(reference[0])
    return str(reference)


@dataclass
class _Draft:
    event: JsonDict
    prev_ids: list[str]
    auth_ids: list[str]
    before_group: int
    before_ids: StateView
    resolved_group: NewStateGroup | None
    auth_state: dict[StateKey, JsonDict]


# The most events written in one transaction.
MAX_GROUP_COMMIT = 100


@dataclass(eq=False)
class _Unwritten:
    """An event queued for its room's writer, and who waits for it to be written."""

    row: EventToPersist
    stored: StoredEvent
    notified: list[tuple[str, list[Any]]]
    waiting: list[Deferred[StoredEvent]]

    def answer(self) -> Deferred[StoredEvent]:
        """Fires with the event once it is written, or fails if it cannot be."""
        answer: Deferred[StoredEvent] = Deferred()
        self.waiting.append(answer)
        return answer

    def settle(self, outcome: StoredEvent | Exception) -> None:
        waiting, self.waiting = self.waiting, []
        for answer in waiting:
            if isinstance(outcome, Exception):
                answer.errback(outcome)
            else:
                answer.callback(outcome)


@dataclass(eq=False)
class _RoomWriter:
    """A room's messages not yet written, and its extremities once they are."""

    extremities: list[str]
    queue: list[_Unwritten]  # waiting for the next transaction
    events: dict[str, _Unwritten]  # queued or being written
    idle: list[Deferred[None]]  # fired when everything is written (or abandoned)


@dataclass(frozen=True)
class _Head:
    """What a draft builds on: the room's extremities (its unwritten messages included)
    and the number of the room's abandoned writes when it was read."""

    extremities: list[str]
    failures: int


class JoinedMembers(set[str]):
    """A room's joined members, counted by server as they join and leave, so the servers
    in the room (federation's recipients, for every event, typing notice and receipt) are
    known without a pass over every member."""

    def __init__(self, members: Iterable[str] = ()) -> None:
        super().__init__()
        self._per_server: dict[str, int] = {}
        for member in members:
            self.add(member)

    def add(self, member: str) -> None:
        if member not in self:
            super().add(member)
            server = domain_of(member)
            self._per_server[server] = self._per_server.get(server, 0) + 1

    def discard(self, member: object) -> None:
        if isinstance(member, str) and member in self:
            super().discard(member)
            server = domain_of(member)
            left = self._per_server[server] - 1
            if left:
                self._per_server[server] = left
            else:
                del self._per_server[server]

    def servers(self) -> set[str]:
        return set(self._per_server)


class _EventCache(MeasuredLRU[str, StoredEvent]):
    """Events by ID; one that ages out lets go of its parsed form too (which would
    otherwise stay until newer parses push it out)."""

    def popitem(self) -> tuple[str, StoredEvent]:
        event_id, event = super().popitem()
        event.forget_parsed()
        return event_id, event


class RoomEventService:
    def __init__(self, hs: HomeServer, max_stream: int, max_state_group: int) -> None:
        self.hs = hs
        self.store = hs.stores.events
        self.clock = hs.clock
        self.server_name = hs.config.server_name
        self.stream = StreamIdGenerator(max_stream)
        self._next_state_group = max_state_group
        self._locks: dict[str, DeferredLock] = {}
        self._event_cache: LRUCache[str, StoredEvent] = _EventCache("events")
        # Weighed by each state's whole length, though states derived from one another
        # share a snapshot (rooms.layered_state): the bound holds however little is shared.
        self._state_cache: LRUCache[int, StateView] = MeasuredLRU("state_groups", weigh=len)
        self._room_versions: LRUCache[str, RoomVersion] = MeasuredLRU("room_versions")
        # This process is the rooms' only writer, so these stay right once loaded.
        self._extremities: LRUCache[str, list[str]] = MeasuredLRU("forward_extremities")
        self._chain_lengths: LRUCache[int, int] = MeasuredLRU("state_chain_lengths")
        self._joined: LRUCache[str, JoinedMembers] = MeasuredLRU("joined_members")
        # Recent client transactions -> event ID, so that a client's quick retry is answered
        # without drafting an event. Older retries (and those after a restart) are caught by
        # the transaction's unique key when the event is persisted.
        self._txn_ids: LRUCache[TxnKey, str] = MeasuredLRU("transaction_ids")
        self._event_txns: LRUCache[str, TxnKey | None] = MeasuredLRU("event_transactions")
        # Group commit: the rooms with messages being written, their transactions, and how
        # many times each room's writes were given up (a database failure).
        self._writers: dict[str, _RoomWriter] = {}
        self._ready: dict[str, None] = {}  # rooms with events queued, oldest first
        self._writing = False
        self._unwritten_txns: dict[TxnKey, _Unwritten] = {}
        self._write_failures: dict[str, int] = {}
        # Rooms whose extremities are being read from the store -> whether a write of the
        # room landed meanwhile (the answer, maybe missing it, is then not cached).
        self._extremity_loads: dict[str, bool] = {}
        self.on_new_event: list[Any] = []
        # The lowest stream position handed to backfilled history in this process.
        self._backfill_floor = 1

    async def event_for_txn(self, txn: TxnKey) -> StoredEvent | None:
        """The event a device recently sent with this transaction ID, if any (the cache
        only: every send's write catches older retries anyway); one still being written
        is answered once it is (and forgotten if it cannot be)."""
        unwritten = self._unwritten_txns.get(txn)
        if unwritten is not None:
            try:
                return await _result_of(unwritten.answer())
            except TransactionAlreadySent as e:
                return await self.get_event(e.event_id)
            except Exception:
                return None  # given up: drafted again
        event_id = self._txn_ids.get(txn)
        return await self.get_event(event_id) if event_id is not None else None

    async def transactions_of(self, event_ids: Iterable[str]) -> dict[str, TxnKey]:
        """The transaction each event was sent under, for those sent with one. An event's
        transaction is written with it and never changes, so an answer (or its absence)
        is kept; the database is asked only about events this process has not seen."""
        found: dict[str, TxnKey] = {}
        missing: list[str] = []
        for event_id in event_ids:
            if event_id in self._event_txns:
                txn = self._event_txns[event_id]
                if txn is not None:
                    found[event_id] = txn
            else:
                missing.append(event_id)
        if missing:
            loaded = await self.store.get_txn_ids(missing)
            for event_id in missing:
                self._event_txns[event_id] = loaded.get(event_id)
            found.update(loaded)
        return found

    async def _first_of_sent(self, txn: TxnKey | None) -> StoredEvent:
        """The first event of a transaction the database says was sent before (purges
        drop transactions with their events, so it is there)."""
        return await self.first_of_retry(txn, not_found("Unknown transaction"))

    async def first_of_retry(self, txn: TxnKey | None, refusal: MatrixError) -> StoredEvent:
        """The first event of ``txn`` if it was sent before, else ``refusal`` raised: a retry
        older than the cache, from a user who has since lost the right to send (left, was
        kicked, lost power), still gets its first answer."""
        event_id = await self.store.get_txn_event_id(txn) if txn is not None else None
        first = await self.get_event(event_id) if event_id is not None else None
        if first is None:
            raise refusal
        assert txn is not None
        self._txn_ids[txn] = first.event_id
        return first

    # Reading

    async def room_version(self, room_id: str) -> RoomVersion:
        version = self._room_versions.get(room_id)
        if version is None:
            room = await self.store.get_room(room_id)
            if room is None:
                raise not_found("Unknown room")
            known = get_room_version(room[0])
            if known is None:
                raise MatrixError(500, Codes.UNKNOWN, f"Room has unknown version {room[0]}")
            version = self._room_versions[room_id] = known
        return version

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        cached = self._event_cache.get  # (one look-up per ID: a sync asks for hundreds)
        found: dict[str, StoredEvent] = {}
        missing = []
        for event_id in event_ids:
            event = cached(event_id)
            if event is not None:
                found[event_id] = event
            elif event_id not in found:
                missing.append(event_id)
        if missing:
            loaded = await self.store.get_events(missing)
            for event_id, event in loaded.items():
                self._event_cache[event_id] = event
            found.update(loaded)
        return found

    async def get_event(self, event_id: str) -> StoredEvent | None:
        return (await self.get_events([event_id])).get(event_id)

    async def state_ids(self, group_id: int) -> StateView:
        """The group's state (cached: read-only, copy with ``state_dict`` to change it)."""
        state = self._state_cache.get(group_id)
        if state is None:
            state = await self.store.get_state_group(group_id)
            self._state_cache[group_id] = state
        return state

    async def state_events(self, group_id: int) -> dict[StateKey, StoredEvent]:
        ids = await self.state_ids(group_id)
        events = await self.get_events(ids.values())
        return {key: events[e] for key, e in ids.items() if e in events}

    async def current_state_events(
        self, room_id: str, keys: list[StateKey] | None = None
    ) -> dict[StateKey, StoredEvent]:
        """The room's current state, or only the entries ``keys`` names."""
        if keys is None:
            ids = await self.store.get_current_state_ids(room_id)
        else:
            ids = await self.store.get_current_state_ids_for(room_id, keys)
        events = await self.get_events(ids.values())
        return {key: events[e] for key, e in ids.items() if e in events}

    def forget_room(self, room_id: str) -> None:
        """A purged room: nothing of it stays cached (events age out of their LRU)."""
        self._room_versions.pop(room_id, None)
        self._extremities.pop(room_id, None)
        self._joined.pop(room_id, None)
        for event_id in [e for e, v in self._event_cache.items() if v.room_id == room_id]:
            self.invalidate_event(event_id)

    async def purge_room(self, room_id: str) -> int:
        """Delete everything held of the room (once its queued messages are written: under
        its lock no more are queued meanwhile); returns the number of events removed."""
        async with self._lock(room_id):
            self.forget_room(room_id)
            purged = await self.store.purge_room(room_id)
            self.forget_room(room_id)
            return purged

    def forget_transactions_of(self, user_id: str) -> None:
        """An erased user's transactions are deleted: none of them may be shown again."""
        for txn in [t for t in self._txn_ids if t.user_id == user_id]:
            self._txn_ids.pop(txn, None)
        for event_id in [e for e, t in self._event_txns.items() if t and t.user_id == user_id]:
            self._event_txns[event_id] = None

    def invalidate_event(self, event_id: str) -> None:
        event = self._event_cache.pop(event_id, None)
        if event is not None:
            event.forget_parsed()

    async def forward_extremities(self, room_id: str) -> list[str]:
        """The room's extremities as written (not its messages still being written)."""
        extremities = self._extremities.get(room_id)
        if extremities is None:
            self._extremity_loads.setdefault(room_id, False)
            try:
                extremities = await self.store.get_forward_extremities(room_id)
            finally:
                # (True: a write of the room landed meanwhile, which the answer may miss)
                stale = self._extremity_loads.pop(room_id, True)
            if not stale:
                self._extremities[room_id] = extremities
        return list(extremities)

    async def drop_extremities(self, room_id: str) -> int:
        """Forget every forward extremity but the deepest (the most recent on ties), so that
        a room with many dangling branches stops citing them all; returns how many went."""
        async with self._lock(room_id):
            events = list((await self.get_events(await self.forward_extremities(room_id))).values())
            if len(events) < 2:
                return 0
            keep = max(events, key=lambda e: (int(e.data.get("depth", 0)), e.stream_ordering))
            dropped = [e.event_id for e in events if e.event_id != keep.event_id]
            await self.store.delete_forward_extremities(room_id, dropped)
            self._extremities[room_id] = [keep.event_id]
            return len(dropped)

    async def joined_users(self, room_id: str) -> JoinedMembers:
        """Who is joined to the room now (kept current as member events are written; not
        to be changed by callers)."""
        joined = self._joined.get(room_id)
        if joined is None:
            joined = JoinedMembers(await self.store.get_joined_users(room_id))
            self._joined[room_id] = joined
        return joined

    # Writing

    @asynccontextmanager
    async def _lock(self, room_id: str, settle: bool = True) -> AsyncIterator[None]:
        """The room's writer lock, dropped from the table once nobody holds or awaits it
        (a table of every room ever written to would only grow). With ``settle``, the
        room's queued messages are written before the holder goes on."""
        lock = self._locks.get(room_id)
        if lock is None:
            lock = self._locks[room_id] = DeferredLock()
        await lock.acquire()
        try:
            if settle:
                await self._settled(room_id)
            yield
        finally:
            lock.release()
            if not lock.locked and not lock.waiting and self._locks.get(room_id) is lock:
                del self._locks[room_id]

    def unwritten_count(self) -> int:
        """Events queued for their rooms' writers (or being written)."""
        return sum(len(writer.events) for writer in self._writers.values())

    async def _settled(self, room_id: str) -> None:
        """Once the room's queued messages are written (or abandoned). Under the room's
        lock no more can be queued meanwhile."""
        writer = self._writers.get(room_id)
        if writer is not None:
            idle: Deferred[None] = Deferred()
            writer.idle.append(idle)
            await idle

    async def _head(self, room_id: str) -> _Head:
        """What the next event of the room builds on (read under the room's lock)."""
        failures = self._write_failures.get(room_id, 0)
        writer = self._writers.get(room_id)
        if writer is not None and writer.events:
            return _Head(list(writer.extremities), failures)
        return _Head(await self.forward_extremities(room_id), failures)

    async def _events_with_unwritten(
        self, room_id: str, event_ids: Iterable[str]
    ) -> dict[str, StoredEvent]:
        """Events by ID, the room's messages still being written included (drafts only:
        readers never see an event before it is written)."""
        writer = self._writers.get(room_id)
        if writer is None:
            return await self.get_events(event_ids)
        ids = list(event_ids)
        found = {e: writer.events[e].stored for e in ids if e in writer.events}
        rest = [e for e in ids if e not in found]
        if rest:
            found.update(await self.get_events(rest))
        return found

    def _allocate_state_group(self) -> int:
        self._next_state_group += 1
        return self._next_state_group

    async def _new_group(
        self, room_id: str, base_group: int | None, changes: Mapping[StateKey, str]
    ) -> NewStateGroup:
        """A group for ``base_group``'s state plus ``changes``: a delta, or a snapshot."""
        group_id = self._allocate_state_group()
        if base_group is None:
            full = dict(changes)
            self._state_cache[group_id] = full
            self._chain_lengths[group_id] = 0
            return NewStateGroup(group_id, None, 0, full)
        length = self._chain_lengths.get(base_group)
        if length is None:
            length = await self.store.get_state_group_chain_length(base_group)
        state = derive_state(await self.state_ids(base_group), changes)
        self._state_cache[group_id] = state
        if length < MAX_STATE_CHAIN:
            self._chain_lengths[group_id] = length + 1
            return NewStateGroup(group_id, base_group, length + 1, dict(changes))
        self._chain_lengths[group_id] = 0
        return NewStateGroup(group_id, None, 0, state_dict(state))

    async def _state_before(
        self, room_id: str, version: RoomVersion, prev_ids: list[str]
    ) -> tuple[int, StateView, NewStateGroup | None]:
        """The state before a new event whose prev_events are ``prev_ids``."""
        prevs = await self._events_with_unwritten(room_id, prev_ids)
        if len(prevs) < len(set(prev_ids)):
            raise _not_stored()  # unwritten messages it was to build on were given up
        if len(prevs) == 1:
            group = next(iter(prevs.values())).state_after
            return group, await self.state_ids(group), None
        state_sets = [await self.state_ids(p.state_after) for p in prevs.values()]
        needed = {e for s in state_sets for e in s.values()}
        events = await self._auth_closure(needed)
        resolved = resolve_state(state_sets, events, version)
        new_group = await self._new_group(room_id, None, resolved)
        return new_group.group_id, resolved, new_group

    async def _auth_closure(self, event_ids: set[str]) -> dict[str, JsonDict]:
        """The events and their whole auth chains, as JSON, for state resolution."""
        result: dict[str, JsonDict] = {}
        frontier = set(event_ids)
        while frontier:
            loaded = await self.get_events(frontier)
            frontier = set()
            for event_id, stored in loaded.items():
                result[event_id] = stored.data
                for auth in stored.data.get("auth_events") or []:
                    auth_id = auth[0] if isinstance(auth, list) else auth
                    if auth_id not in result:
                        frontier.add(auth_id)
        return result

    def _event_refs(self, version: RoomVersion, events: list[StoredEvent]) -> list[Any]:
        """prev/auth references: IDs, or ``[id, {sha256: hash}]`` pairs in room v1 and v2."""
        if version.event_id_format != 1:
            return [e.event_id for e in events]
        return [  # from the whole JSON: the parsed form keeps no hashes
            [e.event_id, {"sha256": reference_hash(parse_event_json(e.json_text), version, False)}]
            for e in events
        ]

    async def create_room_event(
        self, version: RoomVersion, sender: str, content: JsonDict, room_id: str | None
    ) -> StoredEvent:
        """Build and persist the m.room.create event that starts a room."""
        event: JsonDict = {
            "type": "m.room.create",
            "state_key": "",
            "sender": sender,
            "content": content,
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
            "origin_server_ts": self.clock.time_msec(),
        }
        if not version.room_id_from_create_event:
            assert room_id is not None
            event["room_id"] = room_id
        while True:
            event.pop("hashes", None)
            event.pop("signatures", None)
            event_id, signed = self._finish(dict(event), version)
            if version.room_id_from_create_event:
                # The room ID is the create event's hash: two identical create events (same
                # sender, content and millisecond) would name one room, so nudge the time.
                room_id = room_id_for_create_event(signed, version)
            assert room_id is not None
            if room_id not in self._room_versions:
                self._room_versions[room_id] = version  # reserved before any await
                if await self.store.store_room(
                    room_id, version.identifier, sender, self.clock.time_msec()
                ):
                    break
                del self._room_versions[room_id]
            if not version.room_id_from_create_event:
                raise MatrixError(500, Codes.UNKNOWN, "Room ID collision")
            event["origin_server_ts"] += 1
        async with self._lock(room_id):
            try:
                check_auth({**signed, "event_id": event_id}, {}, version)
            except AuthError as e:
                raise MatrixError(400, Codes.BAD_JSON, f"Invalid create event: {e}") from None
            empty = await self._new_group(room_id, None, {})
            return await _result_of(
                await self._persist(
                    signed, event_id, room_id, version, [], [], empty.group_id, empty, None
                )
            )

    async def send(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: JsonDict,
        state_key: str | None = None,
        txn: TxnKey | None = None,
        redacts: str | None = None,
        extra: JsonDict | None = None,
        cosign: Callable[[JsonDict, RoomVersion], Awaitable[JsonDict]] | None = None,
    ) -> StoredEvent:
        """Create an event in the room as ``sender``: authorised, signed and persisted.
        ``cosign`` gets the signed event before it is persisted and returns it with another
        server's signature added (invites of remote users)."""
        version = await self.room_version(room_id)
        # A message is drafted on the room's unwritten messages; anything else on what is
        # written (it is written alone, after them).
        message = state_key is None and redacts is None
        async with self._lock(room_id, settle=not message):
            if txn is not None:
                existing = await self.event_for_txn(txn)
                if existing is not None:
                    return existing
            head = await self._head(room_id)
            try:
                draft = await self._draft(
                    room_id,
                    version,
                    head.extremities,
                    sender,
                    event_type,
                    content,
                    state_key,
                    redacts,
                    extra,
                )
                event_id, signed = self._finish(draft.event, version)
                try:
                    check_auth({**signed, "event_id": event_id}, draft.auth_state, version)
                except AuthError as e:
                    raise forbidden(str(e)) from None
            except MatrixError as refusal:
                if txn is None:
                    raise
                return await self.first_of_retry(txn, refusal)
            if cosign is not None:
                signed = await cosign(signed, version)
            try:
                answer = await self._persist(
                    signed,
                    event_id,
                    room_id,
                    version,
                    draft.prev_ids,
                    draft.auth_ids,
                    draft.before_group,
                    draft.resolved_group,
                    txn,
                    replaces=draft.before_ids.get((event_type, state_key))
                    if state_key is not None
                    else None,
                    redacts=redacts,
                    head=head,
                )
            except TransactionAlreadySent:  # (an event written alone: a redaction)
                return await self._first_of_sent(txn)
        try:
            return await _result_of(answer)  # (a message: written after the lock is let go)
        except TransactionAlreadySent:
            return await self._first_of_sent(txn)

    async def build_template(
        self, room_id: str, sender: str, event_type: str, content: JsonDict, state_key: str
    ) -> tuple[JsonDict, RoomVersion]:
        """An unsigned event another server completes and signs (``make_join`` and friends),
        refused here already if the rules would refuse it."""
        version = await self.room_version(room_id)
        head = await self.forward_extremities(room_id)  # (only what is written)
        draft = await self._draft(
            room_id, version, head, sender, event_type, content, state_key, None, None
        )
        event = draft.event
        event["origin"] = self.server_name
        try:
            check_auth({**event, "event_id": "$template"}, draft.auth_state, version)
        except AuthError as e:
            raise forbidden(str(e)) from None
        return event, version

    async def _draft(
        self,
        room_id: str,
        version: RoomVersion,
        extremities: list[str],
        sender: str,
        event_type: str,
        content: JsonDict,
        state_key: str | None,
        redacts: str | None,
        extra: JsonDict | None,
    ) -> _Draft:
        """The next event in the room, pointing at ``extremities``, citing its auth events,
        not yet hashed or signed."""
        prev_ids = sorted(extremities)[:10]
        if not prev_ids:
            raise not_found("Unknown room")
        before_group, before_ids, resolved_group = await self._state_before(
            room_id, version, prev_ids
        )
        prevs = await self._events_with_unwritten(room_id, prev_ids)
        event: JsonDict = {
            "type": event_type,
            "room_id": room_id,
            "sender": sender,
            "content": content,
            "depth": max(int(p.data.get("depth", 0)) for p in prevs.values()) + 1,
            "origin_server_ts": self.clock.time_msec(),
        }
        if state_key is not None:
            event["state_key"] = state_key
        if redacts is not None:
            if version.redacts_in_content:
                content.setdefault("redacts", redacts)
            else:
                event["redacts"] = redacts
        if extra:
            event.update(extra)
        try:
            check_event_numbers(content, version)
        except ValueError as e:
            raise MatrixError(400, Codes.BAD_JSON, str(e)) from None
        auth_keys = auth_types_for_event(event, version)
        auth_ids = [before_ids[k] for k in auth_keys if k in before_ids]
        auth_events = await self.get_events(auth_ids)
        event["prev_events"] = self._event_refs(version, [prevs[p] for p in prev_ids])
        event["auth_events"] = self._event_refs(
            version, [auth_events[a] for a in auth_ids if a in auth_events]
        )
        auth_state = {k: auth_events[before_ids[k]].data for k in auth_keys if k in before_ids}
        await self._add_implicit_create(room_id, version, auth_state)
        return _Draft(
            event, prev_ids, auth_ids, before_group, before_ids, resolved_group, auth_state
        )

    async def _add_implicit_create(
        self, room_id: str, version: RoomVersion, auth_state: dict[StateKey, JsonDict]
    ) -> None:
        """Room v12 events do not cite the create event, whose ID the room ID is."""
        if version.room_id_from_create_event:
            create = await self.get_event("$" + room_id[1:])
            if create is not None:
                auth_state[("m.room.create", "")] = create.data

    # Events from other servers

    async def persist_received(
        self,
        event: JsonDict,
        version: RoomVersion,
        state_before: StateIds | None = None,
        replace_current_state: bool = False,
        trusted: bool = False,
    ) -> StoredEvent:
        """Authorise and persist an event another server created (its signatures and hash
        already checked). Its prev_events must be known unless ``state_before`` (the state
        another server told us holds before it) is given. Raises MissingPrevEvents, or
        EventRejected after remembering the event as rejected. ``trusted`` skips the rules:
        only for an invite or leave of a room we hold nothing else of, vouched for by the
        signatures already checked."""
        room_id = str(event["room_id"])
        event = {k: v for k, v in event.items() if k != "unsigned"}
        event_id = compute_event_id(event, version)
        async with self._lock(room_id):
            existing = await self.get_event(event_id)
            if existing is not None and not existing.is_outlier:
                return existing
            prev_ids = [reference_id(p) for p in event.get("prev_events") or []]
            resolved_group: NewStateGroup | None
            if state_before is None:
                known = await self.get_events(prev_ids)
                missing = [p for p in prev_ids if p not in known or known[p].is_outlier]
                if missing or not prev_ids:
                    raise MissingPrevEvents(missing)
                before_group, before_ids, resolved_group = await self._state_before(
                    room_id, version, prev_ids
                )
            else:
                resolved_group = await self._new_group(room_id, None, dict(state_before))
                before_group, before_ids = resolved_group.group_id, dict(state_before)
            auth_ids = [reference_id(a) for a in event.get("auth_events") or []]
            data = {**event, "event_id": event_id}
            try:
                if not trusted:
                    await self._authorise_received(room_id, version, data, auth_ids, before_ids)
            except AuthError as e:
                await self.hs.stores.federation.store_outliers(
                    [(event_id, room_id, canonical_json(event).decode("utf-8"), True)]
                )
                self.invalidate_event(event_id)
                raise EventRejected(event_id, str(e)) from None
            if state_before is None:
                try:
                    await self._check_current_state(room_id, version, data, before_ids)
                except AuthError as e:
                    # Kept (marked like a rejected one, so no read serves it and nothing
                    # cites it) rather than forgotten, so a re-send is recognised.
                    await self.hs.stores.federation.store_outliers(
                        [(event_id, room_id, canonical_json(event).decode("utf-8"), True)]
                    )
                    self.invalidate_event(event_id)
                    raise SoftFailed(event_id, str(e)) from None
            state_key = event.get("state_key")
            redacts = (
                (event.get("content") or {}).get("redacts")
                if version.redacts_in_content
                else event.get("redacts")
            )
            after_ids = state_dict(before_ids)
            if isinstance(state_key, str):
                after_ids[(str(event["type"]), state_key)] = event_id
            current: dict[StateKey, str] | None = None
            if replace_current_state:
                current = after_ids
            else:
                others = [e for e in await self.forward_extremities(room_id) if e not in prev_ids]
                if others:
                    # The event forks the room (or extends a fork): the current state is
                    # the resolution of every branch's latest state.
                    current = await self._resolve_branches(room_id, version, others, after_ids)
            self.invalidate_event(event_id)
            written = await self._persist(
                event,
                event_id,
                room_id,
                version,
                prev_ids,
                auth_ids,
                before_group,
                resolved_group,
                None,
                replaces=before_ids.get((str(event["type"]), state_key))
                if isinstance(state_key, str)
                else None,
                redacts=redacts if isinstance(redacts, str) else None,
                replace_current_state=current,
            )
            return await _result_of(written)

    async def _resolve_branches(
        self, room_id: str, version: RoomVersion, extremities: list[str], new_state: StateIds
    ) -> StateIds:
        branches = await self.get_events(extremities)
        state_sets: list[StateView] = [
            await self.state_ids(e.state_after) for e in branches.values()
        ]
        state_sets.append(new_state)
        if all(s == state_sets[0] for s in state_sets):
            return new_state
        events = await self._auth_closure({e for s in state_sets for e in s.values()})
        return resolve_state(state_sets, events, version)

    async def _check_current_state(
        self, room_id: str, version: RoomVersion, event: JsonDict, before_ids: StateView
    ) -> None:
        """AuthError if the room's current state (not only the state before the event)
        refuses the event."""
        keys = auth_types_for_event(event, version)
        current = await self.store.get_current_state_ids_for(room_id, keys)
        if all(current.get(k) == before_ids.get(k) for k in keys):
            return
        loaded = await self.get_events(current[k] for k in keys if k in current)
        at_current = {k: loaded[current[k]].data for k in keys if current.get(k) in loaded}
        await self._add_implicit_create(room_id, version, at_current)
        check_auth(event, at_current, version)

    async def _authorise_received(
        self,
        room_id: str,
        version: RoomVersion,
        event: JsonDict,
        auth_ids: list[str],
        before_ids: StateView,
    ) -> None:
        """The rules against the event's own auth events, then against the state before it;
        AuthError if either refuses."""
        check_auth(event, await self._cited_auth_state(room_id, version, event, auth_ids), version)
        keys = auth_types_for_event(event, version)
        state_events = await self.get_events(before_ids[k] for k in keys if k in before_ids)
        at_state = {
            k: state_events[before_ids[k]].data
            for k in keys
            if k in before_ids and before_ids[k] in state_events
        }
        await self._add_implicit_create(room_id, version, at_state)
        check_auth(event, at_state, version)

    async def _cited_auth_state(
        self, room_id: str, version: RoomVersion, event: JsonDict, auth_ids: list[str]
    ) -> dict[StateKey, JsonDict]:
        """The state an event's own auth_events stand for, refusing citations the rules do
        not allow: unknown, rejected or other rooms' events, two of one kind, or kinds the
        event has no business citing."""
        loaded = await self.get_events(auth_ids)
        allowed = set(auth_types_for_event(event, version))
        state: dict[StateKey, JsonDict] = {}
        for auth_id in auth_ids:
            auth = loaded.get(auth_id)
            if auth is None:
                raise AuthError(f"auth event {auth_id} is unknown")
            if auth.rejected:
                raise AuthError(f"auth event {auth_id} was rejected")
            if auth.room_id != room_id:
                raise AuthError(f"auth event {auth_id} is from another room")
            key = (str(auth.data.get("type")), str(auth.data.get("state_key")))
            if key in state:
                raise AuthError(f"two auth events of kind {key}")
            if key not in allowed:
                raise AuthError(f"auth event {auth_id} ({key}) is not one the event may cite")
            state[key] = auth.data
        await self._add_implicit_create(room_id, version, state)
        return state

    def _finish(self, event: JsonDict, version: RoomVersion) -> tuple[str, JsonDict]:
        """Hash, sign and size-check the event; returns its ID and signed JSON."""
        if version.event_id_format == 1:
            event["event_id"] = f"${secrets.token_urlsafe(18)}:{self.server_name}"
        return hash_sign_and_identify(event, version, self.server_name, self.hs.signing_key), event

    async def _current_state_rows(
        self, state: dict[StateKey, str]
    ) -> dict[StateKey, tuple[str, str | None]]:
        """Current-state rows (event ID, membership) for a whole state map."""
        members = await self.get_events(e for (t, _), e in state.items() if t == "m.room.member")
        rows: dict[StateKey, tuple[str, str | None]] = {}
        for key, event_id in state.items():
            membership = None
            if key[0] == "m.room.member":
                member = members.get(event_id)
                value = (member.data.get("content") or {}).get("membership") if member else None
                membership = value if isinstance(value, str) else None
            rows[key] = (event_id, membership)
        return rows

    @staticmethod
    def _encode(event: JsonDict) -> str:
        """The bytes we sign and keep: canonical JSON, refused above the size limit."""
        encoded = canonical_json(event)
        if len(encoded) > MAX_EVENT_BYTES:
            raise MatrixError(413, Codes.TOO_LARGE, "Event is larger than 65536 bytes")
        return encoded.decode("utf-8")

    async def _group_after(
        self,
        room_id: str,
        event: JsonDict,
        event_id: str,
        before_group: int,
        resolved_group: NewStateGroup | None,
    ) -> tuple[NewStateGroup | None, int]:
        """(the group to write with the event, the state group after it)."""
        state_key = event.get("state_key")
        if state_key is None:
            return resolved_group, before_group
        if resolved_group is not None:
            # Persist the resolved state first, then the delta on top of it.
            await self.store.persist_state_group(room_id, resolved_group)
        new_group = await self._new_group(
            room_id, before_group, {(event["type"], state_key): event_id}
        )
        return new_group, new_group.group_id

    async def persist_backfilled(
        self,
        events: list[JsonDict],
        version: RoomVersion,
        state_before: Callable[[str], Awaitable[StateIds]],
    ) -> int:
        """Older history fetched from another server (signatures checked), placed before
        everything the room holds, oldest lowest. ``state_before(event_id)`` is asked for
        the state of an event whose prev_events we lack. Returns how many were kept."""
        if not events:
            return 0
        room_id = str(events[0]["room_id"])
        kept = 0
        async with self._lock(room_id):
            ordered = sorted(events, key=lambda e: int(e.get("depth", 0)))
            # Positions below every one in use (0 means an outlier, so never 0): the
            # oldest event gets the lowest.
            lowest = min(await self.store.get_min_stream_ordering(), 1, self._backfill_floor)
            self._backfill_floor = lowest - len(ordered)
            position = self._backfill_floor - 1
            for event in ordered:
                position += 1
                event = {k: v for k, v in event.items() if k != "unsigned"}
                event_id = compute_event_id(event, version)
                existing = await self.get_event(event_id)
                if existing is not None and not existing.is_outlier:
                    continue
                prev_ids = [reference_id(p) for p in event.get("prev_events") or []]
                known = await self.get_events(prev_ids)
                resolved_group: NewStateGroup | None
                if prev_ids and all(p in known and not known[p].is_outlier for p in prev_ids):
                    before_group, before_ids, resolved_group = await self._state_before(
                        room_id, version, prev_ids
                    )
                else:
                    before_ids = await state_before(event_id)
                    resolved_group = await self._new_group(room_id, None, before_ids)
                    before_group = resolved_group.group_id
                auth_ids = [reference_id(a) for a in event.get("auth_events") or []]
                try:
                    await self._authorise_received(
                        room_id, version, {**event, "event_id": event_id}, auth_ids, before_ids
                    )
                except AuthError as e:
                    logger.info("Backfilled %s is rejected: %s", event_id, e)
                    continue
                new_group, after_group = await self._group_after(
                    room_id, event, event_id, before_group, resolved_group
                )
                state_key = event.get("state_key")
                redacts = (
                    (event.get("content") or {}).get("redacts")
                    if version.redacts_in_content
                    else event.get("redacts")
                )
                await self.store.persist_event(
                    EventToPersist(
                        event_id=event_id,
                        room_id=room_id,
                        event_type=str(event["type"]),
                        state_key=state_key if isinstance(state_key, str) else None,
                        sender=str(event["sender"]),
                        depth=int(event["depth"]),
                        origin_server_ts=int(event["origin_server_ts"]),
                        json_text=self._encode(event),
                        prev_event_ids=prev_ids,
                        auth_event_ids=auth_ids,
                        stream_ordering=position,
                        state_before=before_group,
                        state_after=after_group,
                        new_state_group=new_group,
                        membership=str((event.get("content") or {}).get("membership"))
                        if event.get("type") == "m.room.member"
                        else None,
                        current_state_update=False,
                        replaces_state=before_ids.get((str(event["type"]), state_key))
                        if isinstance(state_key, str)
                        else None,
                        redacts=redacts if isinstance(redacts, str) else None,
                        relation=relation_of(event),
                        search=search_text_of(event),
                        backfilled=True,
                    )
                )
                self.invalidate_event(event_id)
                if isinstance(redacts, str):
                    self.invalidate_event(redacts)
                kept += 1
        return kept

    async def _persist(
        self,
        event: JsonDict,
        event_id: str,
        room_id: str,
        version: RoomVersion,
        prev_ids: list[str],
        auth_ids: list[str],
        before_group: int,
        resolved_group: NewStateGroup | None,
        txn: TxnKey | None,
        replaces: str | None = None,
        redacts: str | None = None,
        replace_current_state: dict[StateKey, str] | None = None,
        head: _Head | None = None,
    ) -> Deferred[StoredEvent]:
        """Queue the event for the room's writer (under the room's lock); the answer fires
        once it is written. Only a message drafted on ``head`` is queued behind messages
        still being written and answered after the lock is let go; anything else is
        written alone before this returns."""
        json_text = self._encode(event)
        state_key = event.get("state_key")
        if names_hold_nul(event):
            # (the database keeps them as text, which on PostgreSQL holds no NUL character)
            raise MatrixError(
                400, Codes.BAD_JSON, "Event types, state keys and IDs may not hold U+0000"
            )
        new_group, after_group = await self._group_after(
            room_id, event, event_id, before_group, resolved_group
        )
        membership = None
        if event["type"] == "m.room.member":
            membership = str(event["content"].get("membership"))
        current_rows = None
        if replace_current_state is not None:
            current_rows = await self._current_state_rows(replace_current_state)
            if state_key is not None:
                current_rows[(event["type"], state_key)] = (event_id, membership)
        queued = head is not None and state_key is None and new_group is None and redacts is None
        if not queued:
            await self._settled(room_id)
        stream_ordering = self.stream.allocate()
        try:
            # Notification counts are written with the event, so a sync that sees the event
            # sees its counts too.
            notifications, notified = await self.hs.push.evaluate_event(
                event, room_id, before_group, event_id
            )
            if head is not None and head.failures != self._write_failures.get(room_id, 0):
                raise _not_stored()  # what the draft built on was never written
            row = EventToPersist(
                event_id=event_id,
                room_id=room_id,
                event_type=event["type"],
                state_key=state_key,
                sender=event["sender"],
                depth=int(event["depth"]),
                origin_server_ts=int(event["origin_server_ts"]),
                json_text=json_text,
                prev_event_ids=prev_ids,
                auth_event_ids=auth_ids,
                stream_ordering=stream_ordering,
                state_before=before_group,
                state_after=after_group,
                new_state_group=new_group,
                membership=membership,
                current_state_update=True,
                replaces_state=replaces,
                txn=txn,
                redacts=redacts,
                relation=relation_of(event),
                search=search_text_of(event),
                notifications=notifications,
                replace_current_state=current_rows,
            )
            stored = StoredEvent(
                event_id, room_id, stream_ordering, json_text, before_group, after_group, False,
                replaces,
            )  # fmt: skip
            unwritten = _Unwritten(row, stored, notified, [])
            written = unwritten.answer()
            self._queue(unwritten, head.extremities if head is not None else [])
        except BaseException:
            self.stream.finish(stream_ordering)
            raise
        if not queued:
            return defer.succeed(await _result_of(written))
        return written

    def _queue(self, unwritten: _Unwritten, head: list[str]) -> None:
        """Queue an event for writing, starting the writer if it is idle. ``head``: the
        extremities its draft built on (what the room's next message builds on after it;
        an event written alone holds the lock until it is written, so needs none)."""
        row = unwritten.row
        writer = self._writers.get(row.room_id)
        if writer is None:
            writer = self._writers[row.room_id] = _RoomWriter([], [], {}, [])
        writer.extremities = [e for e in head if e not in row.prev_event_ids] + [row.event_id]
        writer.queue.append(unwritten)
        writer.events[row.event_id] = unwritten
        self._ready[row.room_id] = None
        if row.txn is not None:
            self._unwritten_txns[row.txn] = unwritten
        if not self._writing:
            defer.ensureDeferred(self._write_queued())

    async def _write_queued(self) -> None:
        """Write what is queued, a transaction at a time, each taking every event (of any
        room, up to MAX_GROUP_COMMIT) queued while the one before it was written, until
        nothing is queued. A room's events keep their order. If a transaction of several
        rooms fails, each room's part is tried alone: one room's fault (the database
        refusing an event) gives up only its events and what it queued behind them."""
        self._writing = True
        try:
            while self._ready:
                taken = self._take_queued()
                if not await self._write(taken):
                    for part in taken:
                        await self._write([part])
        finally:
            self._writing = False

    async def _write(self, taken: list[tuple[str, _RoomWriter, list[_Unwritten]]]) -> bool:
        """One transaction for ``taken``, settled; False if it failed with several rooms
        in it (nothing settled then), while one room's failed events are given up."""
        rows = [u.row for _, _, batch in taken for u in batch]
        ROOM_EVENTS_PER_WRITE.observe(len(rows))
        try:
            refusals = await self.store.persist_events(rows)
        except Exception:
            if len(taken) > 1:
                logger.warning("Writing %d rooms' events together failed", len(taken))
                return False
            room_id, writer, batch = taken[0]
            logger.exception("Writing %d events of %s failed", len(batch), room_id)
            self._give_up(room_id, writer, batch, _not_stored())
            return True
        refused = {r.txn: r for r in refusals}
        for room_id, writer, batch in taken:
            self._settle_batch(room_id, writer, batch, refused)
        return True

    def _take_queued(self) -> list[tuple[str, _RoomWriter, list[_Unwritten]]]:
        """The next transaction's events: each ready room's queue, oldest rooms first; a
        room with more left goes to the back (a busy room does not starve the others)."""
        taken = []
        budget = MAX_GROUP_COMMIT
        for room_id in list(self._ready):
            if budget == 0:
                break
            del self._ready[room_id]
            writer = self._writers.get(room_id)
            if writer is None or not writer.queue:
                continue
            batch = writer.queue[:budget]
            del writer.queue[: len(batch)]
            taken.append((room_id, writer, batch))
            budget -= len(batch)
            if writer.queue:
                self._ready[room_id] = None
        return taken

    def _settle_batch(
        self,
        room_id: str,
        writer: _RoomWriter,
        batch: list[_Unwritten],
        refused: dict[TxnKey, TransactionAlreadySent],
    ) -> None:
        """A room's part of a written transaction. A retry from before a restart was
        refused: what came before it is written, it is answered with its first event,
        and what was built on it is given up."""
        try:
            at = next((i for i, u in enumerate(batch) if u.row.txn in refused), len(batch))
            self._written(room_id, writer, batch[:at])
            if at < len(batch):
                txn = batch[at].row.txn
                assert txn is not None
                self._unwritten_txns.pop(txn, None)  # (a retry now asks the database)
                batch[at].settle(refused[txn])
                self._give_up(room_id, writer, batch[at:], _not_stored())
        except Exception:  # (a bug: nothing may wait on this room for ever)
            logger.exception("Settling the writes of %s failed", room_id)
            self._give_up(room_id, writer, list(writer.events.values()), _not_stored())
        if not writer.events and self._writers.get(room_id) is writer:
            del self._writers[room_id]
            idle, writer.idle = writer.idle, []
            for waiting in idle:
                waiting.callback(None)

    def _written(self, room_id: str, writer: _RoomWriter, batch: list[_Unwritten]) -> None:
        """Bring the caches up to the written events, then tell readers and senders."""
        if room_id in self._extremity_loads:
            self._extremity_loads[room_id] = True
        for unwritten in batch:
            row, stored = unwritten.row, unwritten.stored
            if row.redacts is not None:
                self.invalidate_event(row.redacts)
            if row.replace_current_state is not None:
                self._joined.pop(room_id, None)  # the whole membership changed: read it again
            if row.txn is not None:
                self._txn_ids[row.txn] = stored.event_id
                self._unwritten_txns.pop(row.txn, None)
            self._event_txns[stored.event_id] = row.txn
            joined = self._joined.get(room_id)
            if row.membership is not None and row.state_key is not None and joined is not None:
                if row.membership == "join":
                    joined.add(row.state_key)
                else:
                    joined.discard(row.state_key)
            known = self._extremities.get(room_id)
            if known is not None:  # (when not cached, the next read loads them from the store)
                self._extremities[room_id] = [e for e in known if e not in row.prev_event_ids] + [
                    stored.event_id
                ]
            self._event_cache[stored.event_id] = stored
        for unwritten in batch:  # every position first: the first sync woken sees them all
            self.stream.finish(unwritten.row.stream_ordering)
        for unwritten in batch:
            stored = unwritten.stored
            try:
                if unwritten.notified:
                    defer.ensureDeferred(self.hs.push.deliver(stored, unwritten.notified))
                for callback in self.on_new_event:
                    callback(stored)
            except Exception:  # (the writer must go on: the room's later events wait on it)
                logger.exception("Announcing %s failed", stored.event_id)
            writer.events.pop(stored.event_id, None)
            unwritten.settle(stored)

    def _give_up(
        self, room_id: str, writer: _RoomWriter, failed: list[_Unwritten], error: Exception
    ) -> None:
        """Events not written, and every one their room queued behind them (built on
        them), are given up; the room's next draft starts from what is written."""
        failed = failed + [u for u in writer.queue if u not in failed]
        writer.queue.clear()
        if self._writers.get(room_id) is writer:
            del self._writers[room_id]
            self._ready.pop(room_id, None)
        self._write_failures[room_id] = self._write_failures.get(room_id, 0) + 1
        self._extremities.pop(room_id, None)
        for unwritten in failed:
            row = unwritten.row
            if writer.events.pop(row.event_id, None) is None:
                continue  # (answered already)
            self.stream.finish(row.stream_ordering)
            if row.txn is not None:
                self._unwritten_txns.pop(row.txn, None)
            unwritten.settle(error)
        idle, writer.idle = writer.idle, []
        for waiting in idle:
            waiting.callback(None)


def _not_stored() -> MatrixError:
    """For an event given up with its room's failed write (logged once, by the writer)."""
    return MatrixError(500, Codes.UNKNOWN, "The event could not be stored: try again")


async def _result_of(answer: Deferred[StoredEvent]) -> StoredEvent:
    return await answer


_SEARCHABLE = {
    "m.room.message": "content.body",
    "m.room.name": "content.name",
    "m.room.topic": "content.topic",
}


def search_text_of(event: JsonDict) -> tuple[str, str] | None:
    """What full-text search indexes: message bodies, names and topics. Encrypted events
    have none of these, so nothing of theirs is ever indexed."""
    key = _SEARCHABLE.get(str(event.get("type")))
    if key is None:
        return None
    value = (event.get("content") or {}).get(key.split(".", 1)[1])
    if isinstance(value, str) and "\x00" in value:
        value = value.replace("\x00", " ")  # (PostgreSQL's text holds none: a separator)
    return (key, value) if isinstance(value, str) and value else None


def relation_of(event: JsonDict) -> tuple[str, str] | None:
    """(parent event ID, rel_type) if the event relates to another one."""
    parent, rel_type = relates_to(event)
    return (parent, rel_type) if parent is not None and rel_type is not None else None
