"""Every read of room events passes through here: membership and history visibility,
applied at each event, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, forbidden, not_found
from homeserver.services.auth import Requester
from homeserver.storage.events import RelationRow, StateKey, StoredEvent, TxnKey
from homeserver.streams import parse_event_position
from rooms.redaction import redact
from rooms.visibility import EventContext, may_see_event, normalise_visibility

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]
HISTORY_KEY: StateKey = ("m.room.history_visibility", "")

# Fields of the federation format that clients do not get.
_FEDERATION_ONLY = ("auth_events", "prev_events", "hashes", "signatures", "depth", "origin")


class RoomAccessService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.events = hs.room_events
        self.store = hs.stores.events
        self.clock = hs.clock

    async def _content_of(self, event_id: str | None) -> JsonDict:
        if event_id is None:
            return {}
        stored = await self.events.get_event(event_id)
        if stored is None:
            return {}
        content = stored.data.get("content")
        return content if isinstance(content, dict) else {}

    async def filter_visible(
        self,
        user_id: str,
        events: Sequence[StoredEvent],
        records: dict[str, tuple[list[tuple[int, str]], bool]] | None = None,
    ) -> list[StoredEvent]:
        """The events ``user_id`` may see, in the given order (never those of users they
        ignore)."""
        if not events:
            return []
        ignored = await self.hs.account_data.ignored_users(user_id)
        if ignored:
            events = [e for e in events if e.data.get("sender") not in ignored]
        histories: dict[str, list[tuple[int, str]] | None] = {}
        # (visibility, the user's membership) by state group: a page of messages mostly
        # shares one state, so it is read once, not twice per event.
        by_group: dict[int, tuple[str, Any]] = {}
        verdicts: dict[tuple[str, str, str | None, str | None, bool], bool] = {}
        visible = []
        for event in events:
            if event.room_id not in histories:
                # A forgotten room reads as one the user was never in (None).
                if records is not None and event.room_id in records:
                    record, forgotten = records[event.room_id]
                else:
                    record, forgotten = await self.store.get_membership_record(
                        user_id, event.room_id
                    )
                histories[event.room_id] = None if forgotten else record
            history = histories[event.room_id]
            before = by_group.get(event.state_before)
            if before is None:
                state = await self.events.state_ids(event.state_before)
                before = by_group[event.state_before] = (
                    normalise_visibility(
                        (await self._content_of(state.get(HISTORY_KEY))).get("history_visibility")
                    ),
                    (await self._content_of(state.get(("m.room.member", user_id)))).get(
                        "membership", "leave"
                    ),
                )
            visibility, membership = before
            if history is None:
                membership = "leave"
            data = event.data
            visibility_after = None
            membership_after = None
            if data.get("type") == "m.room.history_visibility" and data.get("state_key") == "":
                visibility_after = normalise_visibility(
                    (data.get("content") or {}).get("history_visibility")
                )
            if (
                data.get("type") == "m.room.member"
                and data.get("state_key") == user_id
                and history is not None
            ):
                membership_after = (data.get("content") or {}).get("membership")
            joined_later = any(
                m == "join" and stream > event.stream_ordering for stream, m in history or ()
            )
            key = (visibility, str(membership), visibility_after,
                   str(membership_after) if membership_after else None, joined_later)  # fmt: skip
            allowed = verdicts.get(key)
            if allowed is None:  # (most events of a page share one answer)
                allowed = verdicts[key] = may_see_event(EventContext(*key))
            if allowed:
                visible.append(event)
        return visible

    async def server_has_members(self, server_name: str, room_id: str) -> bool:
        """Whether any user of ``server_name`` is, or was, in the room."""
        current = await self.store.get_current_state_ids(room_id)
        suffix = ":" + server_name
        return any(t == "m.room.member" and k.endswith(suffix) for t, k in current)

    async def filter_visible_to_server(
        self, server_name: str, events: Sequence[StoredEvent]
    ) -> list[StoredEvent]:
        """The events another server may be sent: those at least one of its users could see
        (by membership at the event, or, for shared history, membership now)."""
        suffix = ":" + server_name
        joined_now: dict[str, bool] = {}
        visible = []
        for event in events:
            if event.is_outlier or event.rejected:
                continue
            if event.room_id not in joined_now:
                members = await self.events.joined_users(event.room_id)
                joined_now[event.room_id] = server_name in members.servers()
            state = await self.events.state_ids(event.state_before)
            visibility = normalise_visibility(
                (await self._content_of(state.get(HISTORY_KEY))).get("history_visibility")
            )
            memberships = [
                str((await self._content_of(e)).get("membership"))
                for (t, k), e in state.items()
                if t == "m.room.member" and k.endswith(suffix)
            ]
            data = event.data
            if data.get("type") == "m.room.member" and str(data.get("state_key")).endswith(suffix):
                memberships.append(str((data.get("content") or {}).get("membership")))
            if any(
                may_see_event(EventContext(visibility, m, joined_later=joined_now[event.room_id]))
                for m in memberships or ["leave"]
            ):
                visible.append(event)
        return visible

    async def check_event_visible(self, user_id: str, room_id: str, event_id: str) -> StoredEvent:
        """The event, or 404 when it does not exist or the user may not see it (no leak)."""
        stored = await self.events.get_event(event_id)
        if stored is None or stored.room_id != room_id or stored.rejected:
            raise not_found("Event not found")
        if not await self.filter_visible(user_id, [stored]):
            raise not_found("Event not found")
        return stored

    async def membership(self, user_id: str, room_id: str) -> str | None:
        key = ("m.room.member", user_id)
        event_id = (await self.store.get_current_state_ids_for(room_id, [key])).get(key)
        if event_id is None:
            return None
        return str((await self._content_of(event_id)).get("membership"))

    async def state_group_for_reader(self, user_id: str, room_id: str) -> int | None:
        """Which state the user may read (see ``readable_point``); None if forbidden."""
        point = await self.readable_point(user_id, room_id)
        return point.state_after if point is not None else None

    async def readable_point(self, user_id: str, room_id: str) -> StoredEvent | None:
        """The event after which the user may read the room's state: the latest if they are
        joined; the one that took them out if they left or were banned (even in a
        world-readable room: what changed after they left is not theirs to see); the latest
        for anyone else in a world-readable room; otherwise None (forbidden)."""
        if await self.hs.stores.events.get_room(room_id) is None:
            raise forbidden("You are not in this room")
        key = ("m.room.member", user_id)
        current = await self.store.get_current_state_ids_for(room_id, [key, HISTORY_KEY])
        member_id = current.get(key)
        member = await self.events.get_event(member_id) if member_id else None
        membership = (member.data.get("content") or {}).get("membership") if member else None
        if (
            member is not None
            and membership in ("leave", "ban")
            and not await self.store.has_forgotten(user_id, room_id)
        ):
            return member
        visibility = normalise_visibility(
            (await self._content_of(current.get(HISTORY_KEY))).get("history_visibility")
        )
        if membership == "join" or visibility == "world_readable":
            extremities = await self.store.get_forward_extremities(room_id)
            latest = await self.events.get_events(extremities)
            return max(latest.values(), key=lambda e: e.stream_ordering)
        return None

    def serialize(
        self, event: StoredEvent, requester_device: tuple[str, str] | None = None,
        txn_ids: dict[str, TxnKey] | None = None,
        redaction_events: dict[str, StoredEvent] | None = None,
    ) -> JsonDict:  # fmt: skip
        """The client format: the stored JSON (redacted if it was), plus local ``unsigned``."""
        version = self.events._room_versions.get(event.room_id)
        data = dict(event.data)
        data.setdefault("room_id", event.room_id)  # room v12 create events do not carry it
        unsigned: JsonDict = {}
        if event.redacted_by and version is not None:
            data = redact(data, version)
            data["event_id"] = event.event_id
            redaction = (redaction_events or {}).get(event.redacted_by[0])
            unsigned["redacted_because"] = (
                self.serialize(redaction) if redaction else {"event_id": event.redacted_by[0]}
            )
        for field in _FEDERATION_ONLY:
            data.pop(field, None)
        data.pop("unsigned", None)
        unsigned["age"] = max(0, self.clock.time_msec() - int(data.get("origin_server_ts", 0)))
        if txn_ids and requester_device and event.event_id in txn_ids:
            txn = txn_ids[event.event_id]
            if (txn.user_id, txn.device_id) == requester_device:
                unsigned["transaction_id"] = txn.txn_id
        if event.replaces_state:
            unsigned["replaces_state"] = event.replaces_state
        data["unsigned"] = unsigned
        return data

    async def _aggregations(
        self,
        events: Sequence[StoredEvent],
        requester_device: tuple[str, str] | None,
        known: dict[str, list[RelationRow]] | None = None,
    ) -> dict[str, JsonDict]:
        """Bundled aggregations: thread summaries, the latest edit, references. ``known``:
        the relations already read for some events (a sync reads them with its pages)."""
        # State events get no bundled aggregations.
        parents = {e.event_id: e for e in events if not e.redacted_by and "state_key" not in e.data}
        known = known or {}
        rows = await self.store.get_relations_of([p for p in parents if p not in known])
        read_before = [row for p in parents if p in known for row in known[p]]
        if read_before:
            rows = sorted(rows + read_before, key=lambda row: row[4])
        if not rows:
            return {}
        user_id = requester_device[0] if requester_device else None
        children = await self.events.get_events(child for _, _, child, _, _ in rows)
        visible_ids = None
        if user_id is not None:
            visible = await self.filter_visible(user_id, list(children.values()))
            visible_ids = {e.event_id for e in visible}
        result: dict[str, JsonDict] = {}
        threads: dict[str, list[tuple[str, str]]] = {}
        for parent, rel_type, child, sender, _ in rows:
            if visible_ids is not None and child not in visible_ids:
                continue
            child_event = children.get(child)
            if child_event is None or child_event.redacted_by:
                continue
            if child_event.room_id != parents[parent].room_id:
                continue  # a relation from another room means nothing here
            entry = result.setdefault(parent, {})
            if rel_type == "m.thread":
                threads.setdefault(parent, []).append((child, sender))
            elif rel_type == "m.replace":
                if sender == parents[parent].data.get("sender"):
                    edit = children.get(child)
                    if edit is not None:
                        entry["m.replace"] = self.serialize(edit)
            elif rel_type == "m.reference":
                entry.setdefault("m.reference", {"chunk": []})["chunk"].append({"event_id": child})
        latest_events = [children[r[-1][0]] for r in threads.values() if r[-1][0] in children]
        latest_aggregations = await self._aggregations(latest_events, requester_device)
        for parent, replies in threads.items():
            latest = children.get(replies[-1][0])
            if latest is None:
                continue
            latest_json = self.serialize(latest, requester_device)
            if latest.event_id in latest_aggregations:
                latest_json["unsigned"]["m.relations"] = latest_aggregations[latest.event_id]
            result[parent]["m.thread"] = {
                "latest_event": latest_json,
                "count": len(replies),
                "current_user_participated": user_id is not None
                and (
                    any(sender == user_id for _, sender in replies)
                    or parents[parent].data.get("sender") == user_id
                ),
            }
        return {parent: entry for parent, entry in result.items() if entry}

    async def serialize_many(
        self,
        events: Sequence[StoredEvent],
        requester_device: tuple[str, str] | None = None,
        relations: dict[str, list[RelationRow]] | None = None,
    ) -> list[JsonDict]:
        """Serialise with the extras that need lookups: prev_content, transaction IDs,
        bundled relations (``relations``: those already read, by related event)."""
        if not events:
            return []
        for room_id in {event.room_id for event in events}:
            await self.events.room_version(room_id)  # cached for serialize
        # Transaction IDs are only ever shown to their sender.
        own = [
            e.event_id
            for e in events
            if requester_device and e.data.get("sender") == requester_device[0]
        ]
        txn_ids = await self.events.transactions_of(own)
        previous = await self.events.get_events(
            [e.replaces_state for e in events if e.replaces_state]
        )
        redactions = await self.events.get_events(
            [e.redacted_by[0] for e in events if e.redacted_by]
        )
        aggregations = await self._aggregations(events, requester_device, relations)
        result = []
        for event in events:
            data = self.serialize(event, requester_device, txn_ids, redactions)
            if event.event_id in aggregations:
                data["unsigned"]["m.relations"] = aggregations[event.event_id]
            prev = previous.get(event.replaces_state or "")
            if prev is not None:
                content = prev.data.get("content")
                if prev.redacted_by:
                    version = await self.events.room_version(prev.room_id)
                    content = redact(prev.data, version).get("content")
                data["unsigned"]["prev_content"] = content
                data["unsigned"]["prev_sender"] = prev.data.get("sender")
            result.append(data)
        return result


def parse_stream_token(token: str | None) -> int | None:
    """A position in the room's timeline: just after the event at that stream position.
    Pagination tokens and sync tokens are both accepted, as the spec lets clients pass
    ``next_batch`` wherever a pagination token goes."""
    if token is None:
        return None
    position = parse_event_position(token)
    if position is None:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid pagination token {token!r}")
    return position


class RoomReads:
    """Paginated and contextual reads, every one filtered through ``RoomAccessService``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.access = hs.room_access
        self.events = hs.room_events
        self.store = hs.stores.events

    async def _require_some_access(self, user_id: str, room_id: str) -> None:
        await self.events.room_version(room_id)  # 404 for unknown rooms
        if await self.access.state_group_for_reader(user_id, room_id) is None:
            # Not joined and never was: only world-readable history is open to them,
            # and state_group_for_reader already said it is not.
            history = await self.store.get_membership_history(user_id, room_id)
            if not history or await self.store.has_forgotten(user_id, room_id):
                raise forbidden("You are not in this room")

    async def messages(
        self,
        requester: Requester,
        room_id: str,
        from_token: str | None,
        to_token: str | None,
        backwards: bool,
        limit: int,
        event_filter: EventFilter,
        as_admin: bool = False,
    ) -> JsonDict:
        """A page of the room's timeline; `as_admin` reads past the requester's membership
        and history visibility and never backfills (the admin API; audited there)."""
        if not as_admin:
            await self._require_some_access(requester.user_id, room_id)
        start = parse_stream_token(from_token)
        end = parse_stream_token(to_token)
        if start is None:
            start = self.events.stream.current if backwards else 0
        after: int | None
        before: int | None
        if backwards:
            after, before = end, start + 1
        else:
            after, before = start, (end + 1 if end is not None else None)
        rows = await self.store.get_room_event_ids(
            room_id, after, before, backwards, limit, event_filter.types, event_filter.senders
        )
        # Reached the oldest event held here: ask a server in the room for more.
        exhausted = backwards and len(rows) < limit and end is None and not as_admin
        if (
            exhausted
            and self.hs.config.federation.enabled
            and await self.hs.federation_events.backfill(room_id, limit)
        ):
            rows = await self.store.get_room_event_ids(
                room_id, after, before, backwards, limit, event_filter.types,
                event_filter.senders,
            )  # fmt: skip
        loaded = await self.events.get_events(e for e, _ in rows)
        ordered = [loaded[e] for e, _ in rows if e in loaded]
        ordered = [e for e in ordered if event_filter.matches(e.data)]
        visible = (
            ordered if as_admin else await self.access.filter_visible(requester.user_id, ordered)
        )
        response: JsonDict = {
            "chunk": await self.access.serialize_many(
                visible, (requester.user_id, requester.device_id)
            ),
            "start": f"s{start}",
        }
        if len(rows) == limit and rows:
            last = rows[-1][1]
            response["end"] = f"s{last - 1}" if backwards else f"s{last}"
        return response

    async def context(
        self, requester: Requester, room_id: str, event_id: str, limit: int, as_admin: bool = False
    ) -> JsonDict:
        """The event with those around it and the state after them; `as_admin` reads past
        the requester's membership and history visibility (the admin API; audited there)."""
        if as_admin:
            found = await self.events.get_event(event_id)
            if found is None or found.is_outlier or found.room_id != room_id:
                raise not_found("Event not found")
            event = found
        else:
            event = await self.access.check_event_visible(requester.user_id, room_id, event_id)
        half = limit // 2
        before_rows = await self.store.get_room_event_ids(
            room_id, None, event.stream_ordering, True, half
        )
        after_rows = await self.store.get_room_event_ids(
            room_id, event.stream_ordering, None, False, limit - half
        )
        loaded = await self.events.get_events([e for e, _ in before_rows + after_rows])
        before = [loaded[e] for e, _ in before_rows if e in loaded]
        after = [loaded[e] for e, _ in after_rows if e in loaded]
        if not as_admin:
            before = await self.access.filter_visible(requester.user_id, before)
            after = await self.access.filter_visible(requester.user_id, after)
        last = after[-1] if after else event
        state = await self.events.state_events(last.state_after)
        device = (requester.user_id, requester.device_id)
        return {
            "event": (await self.access.serialize_many([event], device))[0],
            "events_before": await self.access.serialize_many(before, device),
            "events_after": await self.access.serialize_many(after, device),
            "state": await self.access.serialize_many(list(state.values()), device),
            "start": f"s{(before_rows[-1][1] - 1) if before_rows else event.stream_ordering - 1}",
            "end": f"s{after_rows[-1][1] if after_rows else event.stream_ordering}",
        }

    async def readable_state(
        self, requester: Requester, room_id: str
    ) -> dict[StateKey, StoredEvent]:
        await self.events.room_version(room_id)
        point = await self.access.readable_point(requester.user_id, room_id)
        if point is None:
            raise forbidden("You are not in this room")
        if await self._is_latest(room_id, point):
            # The room's current state: with several branches, their resolution.
            return await self.events.current_state_events(room_id)
        return await self.events.state_events(point.state_after)

    async def _is_latest(self, room_id: str, point: StoredEvent) -> bool:
        return point.event_id in await self.events.forward_extremities(room_id)

    async def members(
        self,
        requester: Requester,
        room_id: str,
        at: str | None,
        membership: str | None,
        not_membership: str | None,
    ) -> list[JsonDict]:
        await self.events.room_version(room_id)
        point = await self.access.readable_point(requester.user_id, room_id)
        if point is None:
            raise forbidden("You are not in this room")
        position = parse_stream_token(at)
        # ``at`` can only move the answer back in time, never past what the reader may see.
        if position is not None and position < point.stream_ordering:
            rows = await self.store.get_room_event_ids(room_id, None, position + 1, True, 1)
            event = await self.events.get_event(rows[0][0]) if rows else None
            state = await self.events.state_events((event or point).state_after)
        elif await self._is_latest(room_id, point):
            state = await self.events.current_state_events(room_id)
        else:
            state = await self.events.state_events(point.state_after)
        members = []
        for (event_type, _), event in state.items():
            if event_type != "m.room.member":
                continue
            value = (event.data.get("content") or {}).get("membership")
            if membership is not None and value != membership:
                continue
            if not_membership is not None and value == not_membership:
                continue
            members.append(event)
        return await self.access.serialize_many(members, (requester.user_id, requester.device_id))


MAX_RELATION_DEPTH = 3
MAX_RECURSED_RELATIONS = 1000


def _relation_matches(event: JsonDict, rel_type: str | None, event_type: str | None) -> bool:
    relates = (event.get("content") or {}).get("m.relates_to") or {}
    if rel_type is not None and relates.get("rel_type") != rel_type:
        return False
    return event_type is None or event.get("type") == event_type


class RelationReads:
    """/relations and /threads, through the same visibility check as every read."""

    def __init__(self, hs: HomeServer) -> None:
        self.access = hs.room_access
        self.events = hs.room_events
        self.store = hs.stores.events

    async def relations(
        self,
        requester: Requester,
        room_id: str,
        parent_id: str,
        rel_type: str | None,
        event_type: str | None,
        from_token: str | None,
        backwards: bool,
        limit: int,
        to_token: str | None = None,
        recurse: bool = False,
    ) -> JsonDict:
        await self.access.check_event_visible(requester.user_id, room_id, parent_id)
        position = parse_stream_token(from_token)
        stop = parse_stream_token(to_token)
        before, after = (position, stop) if backwards else (stop, position)
        if not recurse:
            rows = await self.store.get_children(
                parent_id, rel_type, event_type, before, after, backwards, limit
            )
            return await self._page(requester, room_id, rows, limit)
        # Relations of relations too (an edit of a reply in a thread...), as deep as
        # MAX_RELATION_DEPTH; the filters apply at every depth.
        found: dict[str, int] = {}
        parents = [parent_id]
        for _ in range(MAX_RELATION_DEPTH):
            children = []
            for parent in parents:
                for event_id, stream in await self.store.get_children(
                    parent, None, None, None, None, False, MAX_RECURSED_RELATIONS
                ):
                    if event_id not in found:
                        found[event_id] = stream
                        children.append(event_id)
            parents = children
            if not parents or len(found) >= MAX_RECURSED_RELATIONS:
                break
        if rel_type is not None or event_type is not None:
            loaded = await self.events.get_events(found)
            found = {
                e: stream for e, stream in found.items()
                if e in loaded and _relation_matches(loaded[e].data, rel_type, event_type)
            }  # fmt: skip
        rows = sorted(found.items(), key=lambda row: row[1], reverse=backwards)
        rows = [
            row for row in rows
            if (before is None or row[1] < before) and (after is None or row[1] > after)
        ][:limit]  # fmt: skip
        page = await self._page(requester, room_id, rows, limit)
        page["recursion_depth"] = MAX_RELATION_DEPTH
        return page

    async def threads(
        self, requester: Requester, room_id: str, participated: bool, from_token: str | None,
        limit: int,
    ) -> JsonDict:  # fmt: skip
        await self.events.room_version(room_id)
        if await self.access.state_group_for_reader(requester.user_id, room_id) is None:
            raise forbidden("You are not in this room")
        before = parse_stream_token(from_token)
        rows = await self.store.get_thread_roots(
            room_id, requester.user_id if participated else None, before, limit
        )
        return await self._page(requester, room_id, rows, limit)

    async def _page(
        self, requester: Requester, room_id: str, rows: list[tuple[str, int]], limit: int
    ) -> JsonDict:
        """A visible, serialised chunk of events from (event ID, position) rows."""
        loaded = await self.events.get_events(e for e, _ in rows)
        ordered = [loaded[e] for e, _ in rows if e in loaded and loaded[e].room_id == room_id]
        visible = await self.access.filter_visible(requester.user_id, ordered)
        response: JsonDict = {
            "chunk": await self.access.serialize_many(
                visible, (requester.user_id, requester.device_id)
            )
        }
        if len(rows) == limit:
            response["next_batch"] = f"s{rows[-1][1]}"
        return response


class EventFilter:
    """The parts of a RoomEventFilter that /messages applies."""

    def __init__(self, raw: JsonDict | None) -> None:
        raw = raw or {}
        self.types = _string_list(raw, "types")
        self.not_types = _string_list(raw, "not_types") or []
        self.senders = _string_list(raw, "senders")
        self.not_senders = _string_list(raw, "not_senders") or []
        self.contains_url = raw.get("contains_url")
        if self.contains_url is not None and not isinstance(self.contains_url, bool):
            raise MatrixError(400, Codes.BAD_JSON, "filter.contains_url must be a boolean")
        # Wildcards in types are matched in Python rather than in SQL.
        self._type_patterns: list[str] | None = None
        if self.types and any("*" in t for t in self.types):
            self._type_patterns, self.types = self.types, None

    def matches(self, event: JsonDict) -> bool:
        event_type = str(event.get("type"))
        if any(_glob(p, event_type) for p in self.not_types):
            return False
        if self._type_patterns and not any(_glob(p, event_type) for p in self._type_patterns):
            return False
        if event.get("sender") in self.not_senders:
            return False
        if self.contains_url is not None:
            has_url = isinstance((event.get("content") or {}).get("url"), str)
            if has_url != self.contains_url:
                return False
        return True


def _glob(pattern: str, value: str) -> bool:
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return pattern == value


def _string_list(raw: JsonDict, key: str) -> list[str] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, Codes.BAD_JSON, f"filter.{key} must be a list of strings")
    return value
