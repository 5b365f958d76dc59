"""/sync: initial and incremental, long-polling on the notifier, reading only what moved."""

from __future__ import annotations

import time
from itertools import islice
from typing import TYPE_CHECKING, Any

from homeserver.services.auth import Requester
from homeserver.services.filters import SyncFilter
from homeserver.storage.events import RelationRow, StoredEvent
from homeserver.storage.sync import RoomBatch
from homeserver.streams import SyncToken

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]
DEFAULT_TIMELINE_LIMIT = 10
TO_DEVICE_BATCH = 100
STRIPPED_STATE_TYPES = (
    "m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
    "m.room.canonical_alias", "m.room.encryption", "m.room.topic",
)  # fmt: skip


# The most events one further page of a timeline reads (see SyncService.timeline).
MAX_TIMELINE_PAGE = 400


def timeline_page_size(sync_filter: SyncFilter) -> int:
    """Events read in the first page of a timeline (sync and sliding sync): the limit and
    one more, to know whether it was limited. Most rooms need no second page; one whose
    newest events are hidden or filtered reads on in pages that double in size."""
    limit = sync_filter.timeline.limit
    limit = DEFAULT_TIMELINE_LIMIT if limit is None else limit
    return limit + 1


class SyncService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.events = hs.room_events
        self.event_store = hs.stores.events
        self.store = hs.stores.sync
        self.access = hs.room_access

    def current_token(self) -> SyncToken:
        return SyncToken(
            self.events.stream.current,
            self.hs.account_data.stream.current,
            self.hs.receipts.stream.current,
            self.hs.typing.position,
            self.hs.presence.position,
            self.hs.e2ee.to_device.current,
            self.hs.e2ee.device_lists.current,
        )

    async def sync(
        self,
        requester: Requester,
        since: SyncToken | None,
        timeout_ms: int,
        full_state: bool,
        sync_filter: SyncFilter,
    ) -> JsonDict:
        notifier = self.hs.notifier
        user_id, device_id = requester.user_id, requester.device_id
        deadline = time.monotonic() + timeout_ms / 1000
        if since is not None and not full_state and timeout_ms > 0:
            # The sync that handed out ``since`` left its listener: if nothing was notified
            # since, the answer would be empty, so wait before building anything.
            parked = notifier.unpark((user_id, device_id, str(since)))
            if parked is not None:
                try:
                    await parked.wait(timeout_ms)
                finally:
                    parked.close()
        if since is not None and since.typing > self.hs.typing.position:
            since.typing = 0  # typing and presence positions do not survive a restart
        if since is not None and since.presence > self.hs.presence.position:
            since.presence = 0
        while True:
            # Listen before reading any position: a change notified while the answer is
            # being built then ends the wait at once instead of being lost.
            listener = notifier.listen(user_id)
            try:
                result, changed = await self._build(requester, since, full_state, sync_filter)
            except BaseException:
                listener.close()
                raise
            remaining = int((deadline - time.monotonic()) * 1000)
            if changed or since is None or full_state or remaining <= 0:
                token = result.get("next_batch")
                if isinstance(token, str):
                    notifier.park((user_id, device_id, token), listener)
                else:
                    listener.close()
                return result
            try:
                await listener.wait(remaining)
            finally:
                listener.close()

    async def _build(
        self,
        requester: Requester,
        since: SyncToken | None,
        full_state: bool,
        sync_filter: SyncFilter,
    ) -> tuple[JsonDict, bool]:
        user_id = requester.user_id
        now = self.current_token()
        rooms: JsonDict = {"join": {}, "invite": {}, "leave": {}, "knock": {}}
        window = await self.store.read_window(
            user_id, since, now, requester.device_id, TO_DEVICE_BATCH
        )
        all_joined = window.rooms("join")
        joined = [r for r in all_joined if sync_filter.allows_room(r)]
        membership_changes: dict[str, tuple[str, int]] = {}
        for room_id, membership, stream in window.membership_changes:
            membership_changes[room_id] = (membership, stream)

        room_account_data: dict[str, list[JsonDict]] = {}
        global_account_data = []
        for room_id, data_type, content in window.account_data:
            entry = {"type": data_type, "content": content}
            if room_id:
                room_account_data.setdefault(room_id, []).append(entry)
            elif sync_filter.account_data.allows(entry):
                global_account_data.append(entry)

        if since is None and not any(e["type"] == "m.push_rules" for e in global_account_data):
            # Rules never changed are not stored as account data; clients still read them here.
            push_rules = await self.hs.push.push_rules_event(user_id)
            if sync_filter.account_data.allows(push_rules):
                global_account_data.append(push_rules)
        receipts = await self.hs.receipts.receipt_events(
            user_id, joined, since.receipts if since else 0, now.receipts
        )
        changed_rooms = set(joined) if since is None or full_state else window.changed_rooms
        device = (requester.user_id, requester.device_id)
        included = []
        for room_id in joined:
            typing = self.hs.typing.event_if_changed(room_id, since.typing if since else 0)
            ephemeral = [e for e in (typing, receipts.get(room_id)) if e is not None]
            ephemeral = [e for e in ephemeral if sync_filter.ephemeral.allows(e)]
            account_data = [
                e for e in room_account_data.get(room_id, [])
                if sync_filter.room_account_data.allows(e)
            ]  # fmt: skip
            if room_id in changed_rooms or ephemeral or account_data:
                included.append((room_id, ephemeral, account_data))
        batch = await self._prefetch(user_id, [r for r, _, _ in included], since, now, sync_filter)
        for room_id, ephemeral, account_data in included:
            newly_joined = membership_changes.get(room_id, ("", 0))[0] == "join"
            entry = await self._joined_room(
                user_id, device, room_id, since, now, sync_filter,
                full=since is None or full_state or newly_joined, batch=batch,
            )  # fmt: skip
            entry["ephemeral"] = {"events": ephemeral}
            entry["account_data"] = {"events": account_data}
            rooms["join"][room_id] = entry

        ignored = await self.hs.account_data.ignored_users(user_id)
        for room_id in window.rooms("invite"):
            if not sync_filter.allows_room(room_id):
                continue
            if ignored and await self._invited_by(room_id, user_id) in ignored:
                continue  # an invite from someone ignored never reaches the user
            if since is None or membership_changes.get(room_id, ("", 0))[0] == "invite":
                rooms["invite"][room_id] = {"invite_state": {"events": await self.stripped_state(
                    room_id, user_id)}}  # fmt: skip
        for room_id in window.rooms("knock"):
            if since is None or membership_changes.get(room_id, ("", 0))[0] == "knock":
                rooms["knock"][room_id] = {"knock_state": {"events": await self.stripped_state(
                    room_id, user_id)}}  # fmt: skip
        for room_id in window.rooms("leave", "ban"):
            if not sync_filter.allows_room(room_id):
                continue
            change = membership_changes.get(room_id)
            if since is None and not sync_filter.include_leave:
                continue
            if since is not None and (change is None or change[0] not in ("leave", "ban")):
                continue
            if await self.event_store.has_forgotten(user_id, room_id):
                continue
            rooms["leave"][room_id] = await self._left_room(
                user_id, device, room_id, since, sync_filter
            )

        presence = [
            e for e in await self.hs.presence.events_since(
                user_id, since.presence if since else 0, joined
            )
            if sync_filter.presence.allows(e)
        ]  # fmt: skip
        changed = bool(
            rooms["join"] or rooms["invite"] or rooms["leave"] or rooms["knock"]
            or global_account_data or presence
        )  # fmt: skip
        await self._serialize_all(rooms, device, batch.relations)
        device_state = window.device
        assert device_state is not None
        to_device = device_state.to_device
        if len(to_device) == TO_DEVICE_BATCH:
            now.to_device = to_device[-1][0]  # the rest comes with the next sync
        device_changes = await self._device_list_changes(
            user_id, since, now, all_joined, membership_changes, window.member_changes
        )
        if to_device or device_changes["changed"] or device_changes["left"]:
            changed = True
        response: JsonDict = {
            "next_batch": str(now),
            "rooms": rooms,
            "account_data": {"events": global_account_data},
            "presence": {"events": presence},
            "to_device": {"events": [message for _, message in to_device]},
            "device_lists": device_changes,
            "device_one_time_keys_count": device_state.one_time_key_counts,
            "device_unused_fallback_key_types": device_state.unused_fallback_key_types,
        }
        return response, changed

    async def _serialize_all(
        self,
        rooms: JsonDict,
        device: tuple[str, str],
        relations: dict[str, list[RelationRow]] | None = None,
    ) -> None:
        """Serialise every room's timeline and state in one pass: one lookup of transaction
        IDs, edits and relations for the whole sync instead of one per room (the relations
        of the first pages were read with them)."""
        sections = [
            entry[part]
            for kind in ("join", "leave")
            for entry in rooms[kind].values()
            for part in ("timeline", "state")
        ]
        events: list[StoredEvent] = [e for section in sections for e in section["events"]]
        serialized = await self.access.serialize_many(events, device, relations)
        by_id = {event.event_id: data for event, data in zip(events, serialized, strict=True)}
        for section in sections:
            section["events"] = [by_id[e.event_id] for e in section["events"]]

    async def device_list_changes(self, user_id: str, since: SyncToken, now: SyncToken) -> JsonDict:
        """For /keys/changes: the same answer /sync gives for that window."""
        window = await self.store.read_window(user_id, since, now)
        membership_changes = {room: (m, stream) for room, m, stream in window.membership_changes}
        return await self._device_list_changes(
            user_id, since, now, window.rooms("join"), membership_changes, window.member_changes
        )

    async def _device_list_changes(
        self,
        user_id: str,
        since: SyncToken | None,
        now: SyncToken,
        joined: list[str],
        membership_changes: dict[str, tuple[str, int]],
        member_changes: set[str],
    ) -> JsonDict:
        """Users whose keys changed, who newly share a room, or who share none any more
        (over every joined room: a room filter narrows what the answer shows, not whose
        keys the client must track)."""
        if since is None:
            return {"changed": [], "left": []}
        keys_moved = since.device_lists < now.device_lists
        if not keys_moved and not member_changes and not membership_changes:
            return {"changed": [], "left": []}  # nothing moved: no need to look at members
        sharing: set[str] = {user_id}
        for room_id in joined:
            sharing |= await self.events.joined_users(room_id)
        changed: set[str] = set()
        if keys_moved:
            changed = await self.hs.e2ee.store.users_with_device_changes(
                sharing, since.device_lists, now.device_lists
            )
        left: set[str] = set()
        for member in member_changes:
            (changed if member in sharing else left).add(member)
        for room_id, (membership, _) in membership_changes.items():
            members = await self.event_store.get_joined_users(room_id)
            if membership == "join":
                changed |= set(members)
            else:
                left |= {m for m in members if m not in sharing}
        # A user's own ID stays in: their other devices must learn of a new device or new
        # cross-signing keys to encrypt for it.
        left -= sharing
        return {"changed": sorted(changed), "left": sorted(left)}

    async def _prefetch(
        self,
        user_id: str,
        room_ids: list[str],
        since: SyncToken | None,
        now: SyncToken,
        sync_filter: SyncFilter,
    ) -> RoomBatch:
        """What every included room needs, read for all rooms at once (see
        SyncStore.read_room_batch)."""
        page = None if sync_filter.timeline.types else timeline_page_size(sync_filter)
        batch = await self.store.read_room_batch(
            user_id, room_ids, since.events if since else None, now.events, page
        )
        await self.events.get_events(
            e for rows in batch.first_pages.values() for e, _ in rows
        )  # loads them into the cache in one round trip
        return batch

    async def timeline(
        self,
        user_id: str,
        room_id: str,
        after: int | None,
        upto: int,
        sync_filter: SyncFilter,
        batch: RoomBatch | None = None,
    ) -> tuple[list[StoredEvent], bool, int]:
        """The newest events in (after, upto], limited; returns (events, limited, first pos)."""
        limit = sync_filter.timeline.limit
        limit = DEFAULT_TIMELINE_LIMIT if limit is None else limit
        exact_types = sync_filter.timeline.types
        if exact_types and any("*" in t for t in exact_types):
            exact_types = None
        # Walk back in pages until ``limit`` events pass the filter and the visibility check
        # (the limit counts returned events, not scanned ones).
        accepted: list[StoredEvent] = []
        before = upto + 1
        page = timeline_page_size(sync_filter)
        exhausted = False
        first_page = batch.first_pages.get(room_id) if batch and batch.first_pages else None
        records = batch.records if batch else None
        while len(accepted) <= limit and not exhausted:
            if first_page is not None:
                rows, first_page = first_page, None
            else:
                rows = await self.event_store.get_room_event_ids(
                    room_id, after, before, True, page, exact_types
                )
            exhausted = len(rows) < page
            if not rows:
                break
            before = rows[-1][1]
            # Each further page twice the last: a room whose history the user may not see
            # costs a few reads, not one per page of the limit.
            page = max(page, min(page * 2, MAX_TIMELINE_PAGE))
            loaded = await self.events.get_events(e for e, _ in rows)
            allows = sync_filter.timeline.allows
            candidates = (event for e, _ in rows if (event := loaded.get(e)) and allows(event.data))
            # Checked only as far as the limit needs (a page is read ahead of it), a few at
            # least at a time (history hidden from the user would be one call per event).
            while len(accepted) <= limit:
                chunk = list(islice(candidates, max(limit + 1 - len(accepted), 5)))
                if not chunk:
                    break
                accepted += await self.access.filter_visible(user_id, chunk, records)
        limited = len(accepted) > limit
        events = list(reversed(accepted[:limit]))
        first = events[0].stream_ordering if events else (before if limited else upto + 1)
        return events, limited, first

    async def _state_for(
        self,
        user_id: str,
        room_id: str,
        timeline: list[StoredEvent],
        since: SyncToken | None,
        first_position: int,
        limited: bool,
        full: bool,
        sync_filter: SyncFilter,
        at_group: int | None = None,
    ) -> list[StoredEvent]:
        """State at the start of the timeline (or at ``at_group`` when it is empty)."""
        if timeline:
            group = timeline[0].state_before
        elif at_group is not None:
            group = at_group
        else:
            extremities = await self.events.get_events(
                await self.events.forward_extremities(room_id)
            )
            group = max(extremities.values(), key=lambda e: e.stream_ordering).state_after
        state = await self.events.state_events(group)
        if full:
            chosen = list(state.values())
        elif limited and since is not None:
            changed_ids = set(
                await self.store.get_state_changes(room_id, since.events, first_position)
            )
            changed_keys = {
                (e.data.get("type"), e.data.get("state_key"))
                for e in (await self.events.get_events(changed_ids)).values()
            }
            chosen = [e for key, e in state.items() if key in changed_keys]
        else:
            chosen = []
        timeline_ids = {e.event_id for e in timeline}
        chosen = [e for e in chosen if e.event_id not in timeline_ids]
        chosen = [e for e in chosen if sync_filter.state.allows(e.data)]
        if sync_filter.state.lazy_load_members or sync_filter.timeline.lazy_load_members:
            # Members who sent timeline events, the user, and the heroes of the summary.
            senders = {str(e.data.get("sender")) for e in timeline}
            needed = senders | {user_id}
            needed |= set((await self._summary(room_id, user_id))["m.heroes"])
            chosen = [
                e for e in chosen
                if e.data.get("type") != "m.room.member" or e.data.get("state_key") in needed
            ]  # fmt: skip
            if not full:
                # An incremental sync carries the membership of every sender in its timeline
                # (a client that lazy-loads cannot show a sender without it), unless the
                # timeline itself holds it.
                chosen_ids = {e.event_id for e in chosen}
                for sender in sorted(senders):
                    member = state.get(("m.room.member", sender))
                    if (
                        member is not None
                        and member.event_id not in chosen_ids
                        and member.event_id not in timeline_ids
                    ):
                        chosen.append(member)
        return chosen

    async def _joined_room(
        self,
        user_id: str,
        device: tuple[str, str],
        room_id: str,
        since: SyncToken | None,
        now: SyncToken,
        sync_filter: SyncFilter,
        full: bool,
        batch: RoomBatch | None = None,
    ) -> JsonDict:
        after = None if since is None else since.events
        timeline, limited, first = await self.timeline(
            user_id, room_id, after, now.events, sync_filter, batch
        )
        state = await self._state_for(
            user_id, room_id, timeline, since, first, limited, full, sync_filter
        )
        return {
            # Serialised for all rooms at once at the end of the sync (see _serialize_all).
            "timeline": {"events": timeline, "limited": limited, "prev_batch": f"s{first - 1}"},
            "state": {"events": state},
            "summary": await self._summary(
                room_id, user_id, batch.summaries.get(room_id) if batch else None
            ),
            **await self._unread(
                user_id, room_id, sync_filter, batch.unread.get(room_id) if batch else None
            ),
        }

    async def _unread(
        self,
        user_id: str,
        room_id: str,
        sync_filter: SyncFilter,
        counts: tuple[int, int, dict[str, tuple[int, int]]] | None = None,
    ) -> JsonDict:
        if counts is None:
            counts = await self.hs.stores.push.get_unread_counts(user_id, room_id)
        total, highlight, threads = counts
        result: JsonDict = {
            "unread_notifications": {"notification_count": total, "highlight_count": highlight}
        }
        if sync_filter.timeline.unread_thread_notifications:
            main = threads.pop("main", (0, 0))
            result["unread_notifications"] = {
                "notification_count": main[0],
                "highlight_count": main[1],
            }
            result["unread_thread_notifications"] = {
                thread: {"notification_count": n, "highlight_count": h}
                for thread, (n, h) in threads.items()
            }
        return result

    async def _left_room(
        self,
        user_id: str,
        device: tuple[str, str],
        room_id: str,
        since: SyncToken | None,
        sync_filter: SyncFilter,
    ) -> JsonDict:
        history = await self.event_store.get_membership_history(user_id, room_id)
        left_at = history[-1][0] if history else 0
        timeline, limited, first = await self.timeline(
            user_id, room_id, None if since is None else since.events, left_at, sync_filter
        )
        # Never show a room's state past the moment the user left it.
        rows = await self.event_store.get_room_event_ids(room_id, None, left_at + 1, True, 1)
        leave_event = await self.events.get_event(rows[0][0]) if rows else None
        state = await self._state_for(
            user_id, room_id, timeline, since, first, limited, True, sync_filter,
            at_group=leave_event.state_after if leave_event else None,
        )  # fmt: skip
        return {
            "timeline": {"events": timeline, "limited": limited, "prev_batch": f"s{first - 1}"},
            "state": {"events": state},
            "account_data": {"events": []},
        }

    async def _summary(
        self, room_id: str, user_id: str, members: list[tuple[str, str]] | None = None
    ) -> JsonDict:
        if members is None:
            members = await self.event_store.get_member_summary(room_id)
        joined = [u for u, m in members if m == "join"]
        invited = [u for u, m in members if m == "invite"]
        heroes = sorted(u for u in joined + invited if u != user_id)[:5]
        return {
            "m.heroes": heroes,
            "m.joined_member_count": len(joined),
            "m.invited_member_count": len(invited),
        }

    async def _invited_by(self, room_id: str, user_id: str) -> str | None:
        current = await self.event_store.get_current_state_ids(room_id)
        member_id = current.get(("m.room.member", user_id))
        member = await self.events.get_event(member_id) if member_id else None
        return str(member.data.get("sender")) if member is not None else None

    async def stripped_state(self, room_id: str, user_id: str) -> list[JsonDict]:
        """The room as an invite or knock shows it: a few state events, stripped. For a
        room held elsewhere, what the inviting server told us, plus the invite itself."""
        state = await self.events.current_state_events(room_id)
        stripped: list[JsonDict] = []
        if ("m.room.create", "") not in state:
            member = state.get(("m.room.member", user_id))
            told = (
                await self.hs.stores.federation.get_invite_state(member.event_id)
                if member is not None
                else None
            )
            stripped = [
                e for e in told or []
                if not (e.get("type") == "m.room.member" and e.get("state_key") == user_id)
            ]  # fmt: skip
        for (event_type, state_key), event in state.items():
            if event_type in STRIPPED_STATE_TYPES or (
                event_type == "m.room.member" and state_key == user_id
            ):
                data = event.data
                stripped.append({
                    "type": data["type"], "state_key": data["state_key"],
                    "content": data.get("content", {}), "sender": data["sender"],
                })  # fmt: skip
        return stripped
