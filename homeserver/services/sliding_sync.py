"""Simplified sliding sync (MSC4186): the rooms a client's lists and subscriptions select,
sent once and then only when they change, with the extensions clients use for encryption.

Each connection's progress (its positions and what it has sent of each room) lives in the
database, so a restart or another process carries it on. Reads go through the same
timeline and visibility code as /sync.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError
from homeserver.services.auth import Requester
from homeserver.services.filters import SyncFilter
from homeserver.services.sync import timeline_page_size
from homeserver.storage.events import StateKey, StoredEvent
from homeserver.storage.sliding_sync import POS_PREFIX, RoomMembership, SentRoom
from homeserver.storage.sync import RoomBatch
from homeserver.streams import SyncToken, parse_position
from rooms.sliding_sync import (
    ExtensionScope,
    ListFilters,
    RequiredState,
    RoomConfig,
    SlidingSyncRequest,
    room_passes,
)

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]
UNKNOWN_POS = "M_UNKNOWN_POS"
CONNECTIONS_PER_DEVICE = 10
TO_DEVICE_LIMIT = 100
MAX_HEROES = 5
EXPIRY_CHECK_MS = 3_600_000


@dataclass
class _Selection:
    """The rooms the request selects, with their combined configs and the lists they are in."""

    configs: dict[str, RoomConfig] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    windows: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, room_id: str, config: RoomConfig, list_key: str | None) -> None:
        known = self.configs.get(room_id)
        self.configs[room_id] = config if known is None else known.combine(config)
        if list_key is not None:
            self.lists.setdefault(room_id, []).append(list_key)


@dataclass
class _Plan:
    """A room to send that the user is or was in, and how much of it."""

    room_id: str
    member: RoomMembership
    config: RoomConfig
    status: SentRoom | None
    common: JsonDict
    initial: bool
    expanded: bool
    widened_from: RequiredState | None  # the old config, when the new one asks for more
    after: int | None  # events after this (None: the latest, whatever was sent)
    upto: int

    @property
    def timeline_filter(self) -> SyncFilter:
        return SyncFilter.parse({"room": {"timeline": {"limit": self.config.timeline_limit}}})


class SlidingSyncService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.sliding_sync
        self.events = hs.room_events
        self.classic = hs.sync

    def start(self) -> None:
        self.hs.clock.every(EXPIRY_CHECK_MS, self.expire_connections)

    async def expire_connections(self) -> int:
        lifetime = self.hs.config.rooms.sliding_sync_connection_lifetime_ms
        return await self.store.expire_connections(self.hs.clock.time_msec() - lifetime)

    async def sync(
        self, requester: Requester, request: SlidingSyncRequest, stable: bool
    ) -> JsonDict:
        user_id, device_id = requester.user_id, requester.device_id
        if request.set_presence != "offline":
            await self.hs.presence.set_state(user_id, request.set_presence, keep_message=True)
        now_ms = self.hs.clock.time_msec()
        since: SyncToken | None = None
        sent: dict[str, SentRoom] = {}
        if request.pos is None:
            key = await self.store.new_connection(
                user_id, device_id, request.conn_id, now_ms, CONNECTIONS_PER_DEVICE
            )
        else:
            key, since, sent = await self._resume(requester, request, now_ms)
        timeout = min(request.timeout_ms, self.hs.config.rooms.max_sync_timeout_ms)
        deadline = time.monotonic() + timeout / 1000
        while True:
            # Listen before reading positions, as /sync does: nothing notified meanwhile is lost.
            listener = self.hs.notifier.listen(user_id)
            try:
                answer, rows, now, changed = await self._build(
                    requester, request, since, sent, stable
                )
                remaining = int((deadline - time.monotonic()) * 1000)
                if changed or since is None or remaining <= 0:
                    break
                await listener.wait(remaining)
            finally:
                listener.close()
        if since is not None and not changed:
            answer["pos"] = request.pos  # nothing sent: the client stays where it was
            return answer
        pos = await self.store.add_position(key, str(now), rows, self.hs.clock.time_msec())
        if pos is None:
            raise MatrixError(400, UNKNOWN_POS, "This connection was restarted elsewhere")
        answer["pos"] = f"{key[:POS_PREFIX]}.{pos}"  # the connection's own positions only
        return answer

    async def _resume(
        self, requester: Requester, request: SlidingSyncRequest, now_ms: int
    ) -> tuple[str, SyncToken, dict[str, SentRoom]]:
        lifetime = self.hs.config.rooms.sliding_sync_connection_lifetime_ms
        # A position is "<the connection key's first characters>.<number>".
        prefix, _, number = (request.pos or "").partition(".")
        pos = parse_position(number)
        found = None
        if len(prefix) == POS_PREFIX and pos is not None:
            found = await self.store.resume(
                requester.user_id, requester.device_id, request.conn_id, prefix, pos,
                now_ms - lifetime, now_ms,
            )  # fmt: skip
        if found is None:
            raise MatrixError(400, UNKNOWN_POS, "Unknown or expired position: start again")
        key, token, sent = found
        since = SyncToken.parse(token)
        if since.typing > self.hs.typing.position:
            since.typing = 0  # typing and presence positions do not survive a restart
        if since.presence > self.hs.presence.position:
            since.presence = 0
        return key, since, sent

    async def _build(
        self,
        requester: Requester,
        request: SlidingSyncRequest,
        since: SyncToken | None,
        sent: dict[str, SentRoom],
        stable: bool,
    ) -> tuple[JsonDict, dict[str, SentRoom], SyncToken, bool]:
        user_id = requester.user_id
        now = self.classic.current_token()
        memberships = await self._room_list(user_id, sent)
        order = self._ordered(memberships)
        selection = await self._select(user_id, request, memberships, order)
        rooms, rows = await self._rooms(requester, selection, memberships, since, sent, now, stable)
        answer: JsonDict = {
            "lists": {key: {"count": count} for key, count in selection.counts.items()},
            "rooms": rooms,
        }
        initial_rooms = {r for r, entry in rooms.items() if entry.get("initial")}
        extensions, extension_news = await self._extensions(
            requester, request, selection, memberships, since, now, initial_rooms
        )
        answer["extensions"] = extensions
        return answer, rows, now, bool(rooms) or extension_news

    # The room list

    async def _room_list(
        self, user_id: str, sent: dict[str, SentRoom]
    ) -> dict[str, RoomMembership]:
        """The rooms that may be listed: joined, invited, knocked, kicked or banned (from a
        room once joined), and rooms left of one's own accord only when this connection has
        sent them before."""
        ignored = await self.hs.account_data.ignored_users(user_id)
        listed = {}
        current = await self.store.get_memberships(user_id)
        banned = [m.room_id for m in current if m.membership == "ban"]
        histories = await self.hs.stores.events.get_membership_records(user_id, banned)
        for member in current:
            if member.membership == "ban" and not any(
                m == "join" for _, m in histories.get(member.room_id, ([], False))[0]
            ):
                continue  # banned before ever joining: nothing of the room is theirs
            if member.forgotten:
                continue
            if member.membership == "invite" and member.sender in ignored:
                continue
            if (
                member.membership == "leave"
                and member.sender == user_id
                and member.room_id not in sent
            ):
                continue
            listed[member.room_id] = member
        return listed

    @staticmethod
    def _ordered(memberships: dict[str, RoomMembership]) -> list[str]:
        """Most recent activity first (see RoomMembership.list_stamp)."""
        return sorted(memberships, key=lambda r: (-memberships[r].list_stamp, r))

    async def _select(
        self,
        user_id: str,
        request: SlidingSyncRequest,
        memberships: dict[str, RoomMembership],
        order: list[str],
    ) -> _Selection:
        selection = _Selection()
        facts = _RoomFacts(self.hs, user_id, order)
        for key, config in request.lists.items():
            if config.filters == ListFilters():
                filtered = order
            else:
                filtered = [r for r in order if await facts.passes(config.filters, memberships[r])]
            selection.counts[key] = len(filtered)
            window = config.window(filtered)
            selection.windows[key] = window
            for room_id in window:
                selection.add(room_id, config.config, key)
        for room_id, subscription in request.subscriptions.items():
            if room_id in memberships:  # others are ignored, as the MSC says
                selection.add(room_id, subscription, None)
        return selection

    # Rooms

    async def _rooms(
        self,
        requester: Requester,
        selection: _Selection,
        memberships: dict[str, RoomMembership],
        since: SyncToken | None,
        sent: dict[str, SentRoom],
        now: SyncToken,
        stable: bool,
    ) -> tuple[JsonDict, dict[str, SentRoom]]:
        user_id = requester.user_id
        changed = await self._changed_rooms(selection, memberships, sent, now)
        rooms: JsonDict = {}
        rows: dict[str, SentRoom] = {}
        plans: list[_Plan] = []
        for room_id, config in selection.configs.items():
            member = memberships[room_id]
            status = sent.get(room_id)
            signature = config.required_state.signature()
            common: JsonDict = {"bump_stamp": member.list_stamp, "membership": member.membership}
            if room_id in selection.lists:
                common["lists"] = selection.lists[room_id]
            if member.membership in ("invite", "knock"):
                if status is not None and status.membership_stream == member.stream:
                    continue  # an invite does not change until the membership does
                stripped = await self.classic.stripped_state(room_id, user_id)
                entry = {**common, "initial": True, "stripped_state": stripped}
                if not stable:
                    entry["invite_state"] = stripped
                rooms[room_id] = entry
                rows[room_id] = SentRoom(0, member.stream, config.timeline_limit, signature)
                continue
            initial = status is None or status.sent_stream == 0
            old_state = RequiredState.from_signature(status.required_state) if status else None
            expanded = (
                not initial
                and status is not None
                and (config.timeline_limit > status.timeline_limit)
            )
            widened = old_state is not None and config.required_state.adds_to(old_state)
            if not (initial or expanded or widened or room_id in changed):
                continue
            plans.append(_Plan(
                room_id, member, config, status, common, initial, expanded,
                old_state if widened and not initial else None,
                after=None if initial or expanded or status is None else status.sent_stream,
                upto=now.events if member.membership == "join" else member.stream,
            ))  # fmt: skip
        if plans:
            rooms.update(await self._joined_rooms(requester, plans, since, now, stable, rows))
        return rooms, rows

    async def _joined_rooms(
        self,
        requester: Requester,
        plans: list[_Plan],
        since: SyncToken | None,
        now: SyncToken,
        stable: bool,
        rows: dict[str, SentRoom],
    ) -> JsonDict:
        """The rooms to send that the user is or was in, each read for all of them at once:
        timelines, state changes, the state asked for."""
        user_id = requester.user_id
        room_ids = [p.room_id for p in plans]
        summaries = await self.hs.stores.events.get_member_summaries(room_ids)
        unread = await self.hs.stores.push.get_unread_counts_many(user_id, room_ids)
        direct = await self.hs.account_data.direct_rooms(user_id)
        timelines = await self._timelines(user_id, plans, now)
        changes = await self._state_changes(plans)
        states = await self._states(user_id, plans, timelines, changes, summaries)
        answer: JsonDict = {}
        events_out: list[tuple[JsonDict, str, list[StoredEvent]]] = []
        for plan in plans:
            timeline, limited, first = timelines[plan.room_id]
            entry, state = self._room(
                user_id, plan, timeline, limited, first, since, states[plan.room_id],
                changes.get(plan.room_id), summaries.get(plan.room_id, []),
                unread.get(plan.room_id),
            )  # fmt: skip
            entry.update(plan.common)
            if plan.initial:
                entry["initial"] = True
                if plan.room_id in direct:
                    entry["is_dm"] = True
            if plan.expanded:
                entry["expanded_timeline" if stable else "unstable_expanded_timeline"] = True
            answer[plan.room_id] = entry
            events_out.append((entry, "timeline", timeline))
            events_out.append((entry, "required_state", state))
            status = plan.status
            kept_limit = plan.config.timeline_limit
            if status is not None and not (plan.initial or plan.expanded or limited):
                kept_limit = status.timeline_limit  # the client still holds what it had
            rows[plan.room_id] = SentRoom(
                plan.upto, plan.member.stream, kept_limit, plan.config.required_state.signature()
            )
        await self._serialize(requester, events_out, stable)
        return answer

    async def _changed_rooms(
        self,
        selection: _Selection,
        memberships: dict[str, RoomMembership],
        sent: dict[str, SentRoom],
        now: SyncToken,
    ) -> set[str]:
        """Selected rooms with events the connection has not sent (one query, reading only
        events newer than the oldest thing sent)."""
        since: dict[str, int] = {}
        for room_id in selection.configs:
            status = sent.get(room_id)
            member = memberships[room_id]
            if status is None or member.membership in ("invite", "knock"):
                continue
            upto = now.events if member.membership == "join" else member.stream
            if status.sent_stream < upto:
                since[room_id] = status.sent_stream
        # A room left since it was sent has at least that leave to send.
        changed = {r for r in since if memberships[r].membership != "join"}
        joined = [r for r in since if r not in changed]
        if joined:
            oldest = min(since[r] for r in joined)
            latest = await self.store.get_latest_streams(joined, oldest, now.events)
            changed |= {r for r, stream in latest.items() if stream > since[r]}
        return changed

    async def _timelines(
        self, user_id: str, plans: list[_Plan], now: SyncToken
    ) -> dict[str, tuple[list[StoredEvent], bool, int]]:
        """Each room's latest events (after what was sent, unless sent whole), through the
        same timeline reader and visibility check as /sync; the first page of every joined
        room read in one query per distinct starting point."""
        event_store = self.hs.stores.events
        batch = RoomBatch(
            summaries={}, unread={},
            records=await event_store.get_membership_records(user_id, [p.room_id for p in plans]),
        )  # fmt: skip
        groups: dict[tuple[int | None, int], list[str]] = {}
        for plan in plans:
            if plan.member.membership == "join":
                page = timeline_page_size(plan.timeline_filter)
                groups.setdefault((plan.after, page), []).append(plan.room_id)
        for (after, page), room_ids in groups.items():
            batch.first_pages.update(
                await event_store.get_latest_event_ids(room_ids, after, now.events, page)
            )
        await self.events.get_events(e for rows in batch.first_pages.values() for e, _ in rows)
        return {
            plan.room_id: await self.classic.timeline(
                user_id, plan.room_id, plan.after, plan.upto, plan.timeline_filter, batch
            )
            for plan in plans
        }

    async def _state_changes(self, plans: list[_Plan]) -> dict[str, set[StateKey]]:
        """For rooms sent before (and asking for no more state than then): the state keys
        that changed since."""
        groups: dict[tuple[int, int], list[str]] = {}
        for plan in plans:
            if plan.status is not None and not plan.initial and plan.widened_from is None:
                groups.setdefault((plan.status.sent_stream, plan.upto), []).append(plan.room_id)
        found: dict[str, set[StateKey]] = {r: set() for rooms in groups.values() for r in rooms}
        for (after, upto), room_ids in groups.items():
            by_room = await self.store.get_state_changes(room_ids, after, upto + 1)
            events = await self.events.get_events(e for ids in by_room.values() for e in ids)
            for room_id, ids in by_room.items():
                found[room_id] = {
                    (str(events[e].data.get("type")), str(events[e].data.get("state_key")))
                    for e in ids if e in events
                }  # fmt: skip
        return found

    async def _states(
        self,
        user_id: str,
        plans: list[_Plan],
        timelines: dict[str, tuple[list[StoredEvent], bool, int]],
        changes: dict[str, set[StateKey]],
        summaries: dict[str, list[tuple[str, str]]],
    ) -> dict[str, dict[StateKey, StoredEvent]]:
        """The state each room's answer may draw on: all but the member events, and of
        those only the ones it can use (the user, heroes, lazy-loaded senders and targets,
        changed or named ones), unless its config asks for every member. A room the user
        left shows its state as of leaving."""
        states: dict[str, dict[StateKey, StoredEvent]] = {}
        current: list[str] = []
        all_members: set[str] = set()
        members: set[str] = {user_id}
        for plan in plans:
            room_id = plan.room_id
            if plan.member.membership != "join":
                left = await self.events.get_event(plan.member.event_id)
                states[room_id] = await self.events.state_events(left.state_after) if left else {}
                continue
            current.append(room_id)
            wanted = plan.config.required_state
            if wanted.wants_all_members():
                all_members.add(room_id)
            members |= wanted.named_members(user_id)
            members |= {k for t, k in changes.get(room_id, set()) if t == "m.room.member"}
            others = sorted(u for u, _ in summaries.get(room_id, []) if u != user_id)
            members.update(others[:MAX_HEROES])
            if wanted.lazy_members:
                members |= _lazy_members(timelines[room_id][0])
        by_room = await self.store.get_room_state_ids(current, members, all_members)
        events = await self.events.get_events(e for ids in by_room.values() for e in ids.values())
        for room_id in current:
            ids = by_room.get(room_id, {})
            states[room_id] = {k: events[e] for k, e in ids.items() if e in events}
        return states

    def _room(
        self,
        user_id: str,
        plan: _Plan,
        timeline: list[StoredEvent],
        limited: bool,
        first: int,
        since: SyncToken | None,
        state: dict[StateKey, StoredEvent],
        changed_keys: set[StateKey] | None,
        summary: list[tuple[str, str]],
        unread: tuple[int, int, dict[str, tuple[int, int]]] | None,
    ) -> tuple[JsonDict, list[StoredEvent]]:
        wanted = plan.config.required_state
        widened_from = plan.widened_from
        # Sent whole (or widened): everything the config asks for; else what changed.
        keys = set(state) if changed_keys is None else changed_keys
        chosen = {
            k: state[k] for k in keys
            if k in state and wanted.matches(k[0], k[1], user_id)
            and (widened_from is None or not widened_from.matches(k[0], k[1], user_id))
        }  # fmt: skip
        if wanted.lazy_members:
            for target in _lazy_members(timeline):
                event = state.get(("m.room.member", target))
                if event is not None:
                    chosen[("m.room.member", target)] = event
        entry: JsonDict = {
            "prev_batch": f"s{first - 1}",
            "limited": limited,
            "num_live": sum(
                1 for e in timeline if since is not None and e.stream_ordering > since.events
            ),
        }
        whole = changed_keys is None
        for field_name, (event_type, content_key) in (
            ("name", ("m.room.name", "name")), ("avatar", ("m.room.avatar", "url")),
        ):  # fmt: skip
            if whole or (event_type, "") in keys:
                event = state.get((event_type, ""))
                value = (event.data.get("content") or {}).get(content_key) if event else None
                if isinstance(value, str) and value:
                    entry[field_name] = value
                elif not whole:
                    entry[field_name] = None
        joined = [u for u, m in summary if m == "join"]
        invited = [u for u, m in summary if m == "invite"]
        entry["joined_count"] = len(joined)
        entry["invited_count"] = len(invited)
        named = state.get(("m.room.name", "")) is not None
        if not named and (whole or any(k[0] == "m.room.member" for k in keys)):
            entry["heroes"] = _heroes(user_id, joined + invited, state)
        total, highlight, _ = unread or (0, 0, {})
        entry["notification_count"] = total
        entry["highlight_count"] = highlight
        return entry, list(chosen.values())

    async def _serialize(
        self,
        requester: Requester,
        sections: list[tuple[JsonDict, str, list[StoredEvent]]],
        stable: bool,
    ) -> None:
        """Every room's events serialised in one pass (one look-up of transaction IDs and
        relations for the whole answer)."""
        events = [e for _, _, section in sections for e in section]
        device = (requester.user_id, requester.device_id)
        serialized = await self.hs.room_access.serialize_many(events, device)
        by_id = {e.event_id: data for e, data in zip(events, serialized, strict=True)}
        for entry, part, section in sections:
            served = [by_id[e.event_id] for e in section]
            if part == "timeline":
                entry["timeline_events" if stable else "timeline"] = served
            else:
                entry[part] = served

    # Extensions

    async def _extensions(
        self,
        requester: Requester,
        request: SlidingSyncRequest,
        selection: _Selection,
        memberships: dict[str, RoomMembership],
        since: SyncToken | None,
        now: SyncToken,
        initial_rooms: set[str],
    ) -> tuple[JsonDict, bool]:
        out: JsonDict = {}
        news = False
        user_id, device_id = requester.user_id, requester.device_id
        wanted = request.extensions

        def scoped(scope: ExtensionScope) -> list[str]:
            rooms: set[str] = set()
            for key, window in selection.windows.items():
                if scope.lists is None or key in scope.lists:
                    rooms.update(window)
            for room_id in request.subscriptions:
                if room_id in selection.configs and (scope.rooms is None or room_id in scope.rooms):
                    rooms.add(room_id)
            return sorted(r for r in rooms if memberships[r].membership == "join")

        to_device = wanted.get("to_device")
        if to_device is not None and to_device.enabled:
            acknowledged = parse_position(to_device.since or "0") or 0
            messages = await self.hs.e2ee.store.take_to_device(
                user_id, device_id, acknowledged, now.to_device, to_device.limit or TO_DEVICE_LIMIT
            )
            out["to_device"] = {
                "next_batch": str(messages[-1][0] if messages else acknowledged),
                "events": [m for _, m in messages],
            }
            news = news or bool(messages)
        e2ee = wanted.get("e2ee")
        if e2ee is not None and e2ee.enabled:
            changes = (
                await self.classic.device_list_changes(user_id, since, now)
                if since is not None
                else {"changed": [], "left": []}
            )
            store = self.hs.e2ee.store
            out["e2ee"] = {
                "device_lists": changes,
                "device_one_time_keys_count": await store.count_one_time_keys(user_id, device_id),
                "device_unused_fallback_key_types": await store.unused_fallback_key_types(
                    user_id, device_id
                ),
            }
            news = news or bool(changes["changed"] or changes["left"])
        account_data = wanted.get("account_data")
        if account_data is not None and account_data.enabled:
            in_scope = set(scoped(account_data))
            section, moved = await self._account_data(user_id, since, now, in_scope, initial_rooms)
            out["account_data"] = section
            news = news or moved
        receipts = wanted.get("receipts")
        if receipts is not None and receipts.enabled:
            receipt_rooms = scoped(receipts)
            fresh = [r for r in receipt_rooms if r in initial_rooms or since is None]
            known = [r for r in receipt_rooms if r not in fresh]
            found = await self.hs.receipts.receipt_events(user_id, fresh, 0, now.receipts)
            if known and since is not None:
                found.update(await self.hs.receipts.receipt_events(
                    user_id, known, since.receipts, now.receipts
                ))  # fmt: skip
            out["receipts"] = {"rooms": found}
            news = news or bool(found)
        typing = wanted.get("typing")
        if typing is not None and typing.enabled:
            typing_rooms = {}
            for room_id in scoped(typing):
                start = 0 if since is None or room_id in initial_rooms else since.typing
                event = self.hs.typing.event_if_changed(room_id, start)
                if event is not None:
                    typing_rooms[room_id] = event
            out["typing"] = {"rooms": typing_rooms}
            news = news or bool(typing_rooms)
        return out, news

    async def _account_data(
        self,
        user_id: str,
        since: SyncToken | None,
        now: SyncToken,
        in_scope: set[str],
        initial_rooms: set[str],
    ) -> tuple[JsonDict, bool]:
        sync_store = self.hs.stores.sync
        start = since.account_data if since is not None else 0
        rows = await sync_store.get_account_data_since(user_id, start, now.account_data)
        fresh = in_scope & initial_rooms
        if fresh and start > 0:
            # A room sent whole for the first time comes with all of its account data.
            rows += [
                r for r in await sync_store.get_account_data_since(user_id, 0, start)
                if r[0] in fresh
            ]  # fmt: skip
        global_data: list[JsonDict] = []
        by_room: dict[str, list[JsonDict]] = {}
        for room_id, data_type, content in rows:
            entry = {"type": data_type, "content": content}
            if not room_id:
                global_data.append(entry)
            elif room_id in in_scope:
                by_room.setdefault(room_id, []).append(entry)
        if since is None and not any(e["type"] == "m.push_rules" for e in global_data):
            global_data.append(await self.hs.push.push_rules_event(user_id))
        return {"global": global_data, "rooms": by_room}, bool(global_data or by_room)


class _RoomFacts:
    """What the list filters ask about rooms, read once per request and only if asked."""

    def __init__(self, hs: HomeServer, user_id: str, room_ids: list[str]) -> None:
        self.hs = hs
        self.user_id = user_id
        self.room_ids = room_ids
        self._direct: set[str] | None = None
        self._encrypted: set[str] | None = None
        self._types: dict[str, str | None] | None = None
        self._tags: dict[str, set[str]] | None = None
        self._space_children: dict[tuple[str, ...], set[str]] = {}

    async def passes(self, filters: ListFilters, member: RoomMembership) -> bool:
        room_id = member.room_id
        is_dm = room_id in await self.direct() if filters.is_dm is not None else False
        encrypted = room_id in await self.encrypted() if filters.is_encrypted is not None else False
        room_type = (
            (await self.types()).get(room_id)
            if filters.room_types is not None or filters.not_room_types
            else None
        )
        tags = (
            (await self.tags()).get(room_id, set())
            if filters.tags is not None or filters.not_tags
            else set()
        )
        in_spaces = (
            room_id in await self.children(filters.spaces) if filters.spaces is not None else True
        )
        return room_passes(filters, member.membership, is_dm, encrypted, room_type, tags, in_spaces)

    async def direct(self) -> set[str]:
        if self._direct is None:
            self._direct = await self.hs.account_data.direct_rooms(self.user_id)
        return self._direct

    async def encrypted(self) -> set[str]:
        if self._encrypted is None:
            found = await self.hs.stores.sliding_sync.get_state_of_type(
                self.room_ids, "m.room.encryption"
            )
            self._encrypted = set(found)
        return self._encrypted

    async def types(self) -> dict[str, str | None]:
        if self._types is None:
            creates = await self.hs.stores.sliding_sync.get_state_of_type(
                self.room_ids, "m.room.create"
            )
            events = await self.hs.room_events.get_events(
                event_id for rows in creates.values() for _, event_id in rows
            )
            self._types = {}
            for room_id, rows in creates.items():
                event = events.get(rows[0][1])
                room_type = (event.data.get("content") or {}).get("type") if event else None
                self._types[room_id] = room_type if isinstance(room_type, str) else None
        return self._types

    async def tags(self) -> dict[str, set[str]]:
        if self._tags is None:
            rows = await self.hs.stores.sync.get_account_data_since(
                self.user_id, 0, self.hs.account_data.stream.current
            )
            self._tags = {}
            for room_id, data_type, content in rows:
                tags = (content or {}).get("tags") if data_type == "m.tag" else None
                if room_id and isinstance(tags, dict):
                    self._tags[room_id] = set(tags)
        return self._tags

    async def children(self, spaces: tuple[str, ...]) -> set[str]:
        """Rooms named as children of the given spaces the user is joined to (one level:
        the MSC says not to descend into subspaces)."""
        found = self._space_children.get(spaces)
        if found is None:
            joined = set(await self.hs.stores.events.get_rooms_for_user(self.user_id, ["join"]))
            mine = [s for s in spaces if s in joined]
            rows = await self.hs.stores.sliding_sync.get_state_of_type(mine, "m.space.child")
            events = await self.hs.room_events.get_events(
                event_id for entries in rows.values() for _, event_id in entries
            )
            found = set()
            for entries in rows.values():
                for state_key, event_id in entries:
                    event = events.get(event_id)
                    via = (event.data.get("content") or {}).get("via") if event else None
                    if isinstance(via, list) and via:
                        found.add(state_key)
            self._space_children[spaces] = found
        return found


def _heroes(
    user_id: str, members: list[str], state: dict[tuple[str, str], StoredEvent]
) -> list[JsonDict]:
    heroes = []
    for other in sorted(m for m in members if m != user_id)[:MAX_HEROES]:
        hero: JsonDict = {"user_id": other}
        event = state.get(("m.room.member", other))
        content = (event.data.get("content") or {}) if event else {}
        if isinstance(content.get("displayname"), str):
            hero["displayname"] = content["displayname"]
        if isinstance(content.get("avatar_url"), str):
            hero["avatar_url"] = content["avatar_url"]
        heroes.append(hero)
    return heroes


def _lazy_members(timeline: list[StoredEvent]) -> set[str]:
    """Whose member events a lazy-loading client needs: the senders of the timeline and
    the targets of its membership changes."""
    needed = {str(e.data.get("sender")) for e in timeline}
    needed |= {
        str(e.data.get("state_key")) for e in timeline if e.data.get("type") == "m.room.member"
    }
    return needed
