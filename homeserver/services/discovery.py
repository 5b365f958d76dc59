"""Finding things: the user directory, message search, space hierarchies, and reports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, bad_json, forbidden, invalid_param, not_found
from homeserver.services.auth import Requester
from homeserver.services.rooms import describe_room
from homeserver.storage.discovery import DiscoveryStore
from homeserver.storage.events import StoredEvent
from homeserver.streams import parse_position

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]
SEARCH_KEYS = ("content.body", "content.name", "content.topic")
MAX_SEARCH_LIMIT = 100


def _child_order(child: JsonDict) -> tuple[int, str, int, str]:
    """The spec's order of a space's children: a valid ``order`` string first (by that
    string), then by the m.space.child event's timestamp, then by room ID."""
    order = child["content"].get("order")
    valid = isinstance(order, str) and len(order) <= 50 and all(" " <= c <= "~" for c in order)
    ts = child.get("origin_server_ts")
    return (
        0 if valid else 1,
        order if valid and isinstance(order, str) else "",
        ts if isinstance(ts, int) else 0,
        str(child["state_key"]),
    )


def _offset(token: str | None) -> int:
    if token is None:
        return 0
    offset = parse_position(token[1:]) if token.startswith("o") else None
    if offset is None:
        raise invalid_param("Invalid pagination token")
    return offset


class DiscoveryService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = DiscoveryStore(hs.db)
        self.events = hs.room_events
        self.access = hs.room_access

    # User directory

    async def search_users(self, requester: Requester, term: str, limit: int) -> JsonDict:
        rows = await self.store.search_users(
            requester.user_id, term, limit + 1, self.hs.config.user_directory.search_all_users
        )
        rows = sorted(
            rows
            + await self.store.search_remote_members(
                requester.user_id, term, self.hs.config.server_name, limit + 1
            )
        )
        results = [
            {k: v for k, v in (("user_id", u), ("display_name", n), ("avatar_url", a)) if v}
            for u, n, a in rows[:limit]
        ]
        return {"results": results, "limited": len(rows) > limit}

    # Message search

    async def search(
        self, requester: Requester, body: JsonDict, next_batch: str | None
    ) -> JsonDict:
        categories = body.get("search_categories")
        if not isinstance(categories, dict):
            raise bad_json("search_categories must be an object")
        criteria = categories.get("room_events")
        if not isinstance(criteria, dict):
            return {"search_categories": {}}
        term = criteria.get("search_term")
        if isinstance(term, str):
            term = term.replace("\x00", " ")  # (as in what is indexed)
        if not isinstance(term, str) or not term.strip():
            raise MatrixError(400, Codes.MISSING_PARAM, "room_events.search_term is required")
        keys = criteria.get("keys", list(SEARCH_KEYS))
        if not isinstance(keys, list) or any(k not in SEARCH_KEYS for k in keys):
            raise bad_json(f"room_events.keys must be a list of {', '.join(SEARCH_KEYS)}")
        order_by = criteria.get("order_by", "rank")
        if order_by not in ("rank", "recent"):
            raise bad_json("room_events.order_by must be 'rank' or 'recent'")
        room_filter = criteria.get("filter") or {}
        if not isinstance(room_filter, dict):
            raise bad_json("room_events.filter must be an object")
        limit = room_filter.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise bad_json("room_events.filter.limit must be a positive integer")
        limit = min(limit, MAX_SEARCH_LIMIT)

        rooms = await self.hs.stores.events.get_rooms_for_user(requester.user_id, ["join"])
        if isinstance(room_filter.get("rooms"), list):
            rooms = [r for r in rooms if r in room_filter["rooms"]]
        not_rooms = room_filter.get("not_rooms") or []
        rooms = [r for r in rooms if r not in not_rooms]
        offset = _offset(next_batch)
        senders = room_filter.get("senders")
        sender_list = (
            [x for x in senders if isinstance(x, str)] if isinstance(senders, list) else None
        )
        rows, total = await self.store.search_events(
            rooms, term, keys, order_by == "rank", None, offset, limit, sender_list
        )
        loaded = await self.events.get_events(e for e, _, _ in rows)
        candidates = [loaded[e] for e, _, _ in rows if e in loaded and not loaded[e].redacted_by]
        visible = await self.access.filter_visible(requester.user_id, candidates)
        ranks = {e: r for e, r, _ in rows}
        device = (requester.user_id, requester.device_id)
        serialized = await self.access.serialize_many(visible, device)
        context_spec = criteria.get("event_context")
        results = []
        for event, data in zip(visible, serialized, strict=True):
            result: JsonDict = {"rank": ranks.get(event.event_id, 0.0), "result": data}
            if isinstance(context_spec, dict):
                result["context"] = await self._context(requester, event, context_spec)
            results.append(result)
        response: JsonDict = {
            "results": results,
            "count": total,
            "highlights": sorted({w.lower() for w in term.split()}),
        }
        if offset + limit < total:
            response["next_batch"] = f"o{offset + limit}"
        if criteria.get("include_state") is True:
            state: JsonDict = {}
            for room_id in dict.fromkeys(e.room_id for e in visible):
                current = await self.events.current_state_events(room_id)
                state[room_id] = await self.access.serialize_many(list(current.values()), device)
            response["state"] = state
        groupings = criteria.get("groupings")
        if isinstance(groupings, dict):
            response["groups"] = self._groups(groupings, visible)
        return {"search_categories": {"room_events": response}}

    async def _context(self, requester: Requester, event: StoredEvent, spec: JsonDict) -> JsonDict:
        before = spec.get("before_limit", 5)
        after = spec.get("after_limit", 5)
        if not all(isinstance(v, int) and 0 <= v <= 100 for v in (before, after)):
            raise bad_json("event_context limits must be integers from 0 to 100")
        store = self.hs.stores.events
        before_rows = await store.get_room_event_ids(
            event.room_id, None, event.stream_ordering, True, before
        )
        after_rows = await store.get_room_event_ids(
            event.room_id, event.stream_ordering, None, False, after
        )
        loaded = await self.events.get_events(e for e, _ in before_rows + after_rows)
        user = requester.user_id
        device = (requester.user_id, requester.device_id)
        events_before = await self.access.filter_visible(
            user, [loaded[e] for e, _ in before_rows if e in loaded]
        )
        events_after = await self.access.filter_visible(
            user, [loaded[e] for e, _ in after_rows if e in loaded]
        )
        context: JsonDict = {
            "events_before": await self.access.serialize_many(events_before, device),
            "events_after": await self.access.serialize_many(events_after, device),
            "start": f"s{event.stream_ordering - 1}",
            "end": f"s{event.stream_ordering}",
        }
        if spec.get("include_profile"):
            state = await self.events.state_events(event.state_before)
            profiles = {}
            for sender in {
                str(e.data.get("sender")) for e in [event, *events_before, *events_after]
            }:
                member = state.get(("m.room.member", sender))
                content = (member.data.get("content") or {}) if member else {}
                profiles[sender] = {
                    k: content[k] for k in ("displayname", "avatar_url") if k in content
                }
            context["profile_info"] = profiles
        return context

    @staticmethod
    def _groups(groupings: JsonDict, events: list[StoredEvent]) -> JsonDict:
        groups: JsonDict = {}
        group_by = groupings.get("group_by")
        for grouping in group_by if isinstance(group_by, list) else []:
            key = grouping.get("key") if isinstance(grouping, dict) else None
            if key not in ("room_id", "sender"):
                continue
            buckets: dict[str, list[str]] = {}
            for event in events:
                bucket = event.room_id if key == "room_id" else str(event.data.get("sender"))
                buckets.setdefault(bucket, []).append(event.event_id)
            groups[key] = {
                name: {"results": ids, "order": order}
                for order, (name, ids) in enumerate(buckets.items())
            }
        return groups

    # Spaces

    async def _summary(self, requester: Requester, room_id: str) -> JsonDict | None:
        """The room's public summary, if the requester may see it (None otherwise)."""
        user_id = requester.user_id

        def is_member(key: tuple[str, str]) -> bool:
            return key == ("m.room.member", user_id)

        async def joined_rooms() -> set[str]:
            return set(await self.hs.stores.events.get_rooms_for_user(user_id, ["join"]))

        return await self._summary_for(room_id, is_member, joined_rooms)

    async def summary_for_server(self, server_name: str, room_id: str) -> JsonDict | None:
        """A room's summary as another server may see it: rooms anyone may find, and those
        one of its users is in or invited to. A restricted room it cannot prove access to
        comes with ``allowed_room_ids`` for it to check its own users against."""
        suffix = ":" + server_name

        def is_member(key: tuple[str, str]) -> bool:
            return key[0] == "m.room.member" and key[1].endswith(suffix)

        async def joined_rooms() -> set[str]:
            return set()

        return await self._summary_for(room_id, is_member, joined_rooms, restricted_ok=True)

    async def _summary_for(
        self,
        room_id: str,
        is_member: Callable[[tuple[str, str]], bool],
        joined_rooms: Callable[[], Awaitable[set[str]]],
        restricted_ok: bool = False,
        see_all: bool = False,
    ) -> JsonDict | None:
        if await self.hs.stores.events.get_room(room_id) is None:
            return None
        state = await self.events.current_state_events(room_id)
        if ("m.room.create", "") not in state:
            return None  # only an invite: we know nothing of the room itself

        def content(event_type: str) -> JsonDict:
            event = state.get((event_type, ""))
            return (event.data.get("content") or {}) if event else {}

        join_rule = content("m.room.join_rules").get("join_rule", "invite")
        visibility = content("m.room.history_visibility").get("history_visibility", "shared")
        memberships = {
            (e.data.get("content") or {}).get("membership")
            for key, e in state.items()
            if is_member(key)
        }
        allowed = (
            see_all
            or bool(memberships & {"join", "invite"})
            or join_rule in ("public", "knock", "knock_restricted")
            or visibility == "world_readable"
        )
        allow = content("m.room.join_rules").get("allow") or []
        allowed_rooms = [
            a["room_id"] for a in allow if isinstance(a, dict) and isinstance(a.get("room_id"), str)
        ]
        if not allowed and join_rule == "restricted":
            allowed = bool(set(allowed_rooms) & await joined_rooms()) or restricted_ok
        if not allowed:
            return None
        summary = describe_room(room_id, state)
        if join_rule in ("restricted", "knock_restricted") and restricted_ok:
            summary["allowed_room_ids"] = allowed_rooms
        children = []
        for (event_type, state_key), event in state.items():
            child_content = event.data.get("content") or {}
            via = child_content.get("via")
            # A child event without a non-empty "via" list means the room was removed.
            if event_type == "m.space.child" and isinstance(via, list) and via:
                children.append({
                    "type": "m.space.child", "state_key": state_key,
                    "sender": event.data.get("sender"), "content": child_content,
                    "origin_server_ts": event.data.get("origin_server_ts"),
                })  # fmt: skip
        summary["children_state"] = children
        return summary

    async def room_summary(self, user_id: str | None, room_id: str) -> JsonDict:
        """MSC3266: what a room is, for someone deciding whether to join: members see it;
        others only rooms they could join or read (anyone, for a world-readable or public
        one, signed in or not). 404 for everything else, so no room leaks by its ID."""
        if user_id is not None:
            summary = await self._summary(Requester(user_id, "", ""), room_id)
        else:
            summary = await self._summary_for(
                room_id, lambda _: False, _no_rooms, restricted_ok=False
            )
        if summary is None:
            raise not_found("Room not found or not visible to you")
        summary.pop("children_state", None)
        state = await self.events.current_state_events(room_id)
        encryption = state.get(("m.room.encryption", ""))
        if encryption is not None:
            algorithm = (encryption.data.get("content") or {}).get("algorithm")
            if isinstance(algorithm, str):
                summary["encryption"] = algorithm
        summary["room_version"] = (await self.events.room_version(room_id)).identifier
        if user_id is not None:
            member = state.get(("m.room.member", user_id))
            if member is not None:
                summary["membership"] = (member.data.get("content") or {}).get("membership")
        return summary

    async def mutual_rooms(self, user_id: str, other: str) -> list[str]:
        """Rooms both are joined to (the other one's rooms are not revealed otherwise)."""
        mine = set(await self.hs.stores.events.get_rooms_for_user(user_id, ["join"]))
        theirs = set(await self.hs.stores.events.get_rooms_for_user(other, ["join"]))
        return sorted(mine & theirs)

    async def federation_hierarchy(
        self, server_name: str, room_id: str, suggested_only: bool
    ) -> JsonDict:
        """A space and its direct children, as another server asking may see them."""
        root = await self.summary_for_server(server_name, room_id)
        if root is None:
            raise not_found("Unknown room, or not one your server may see")
        children, inaccessible = [], []
        for child in root["children_state"]:
            if suggested_only and child["content"].get("suggested") is not True:
                continue
            summary = await self.summary_for_server(server_name, child["state_key"])
            if summary is not None:
                children.append(summary)
            elif await self.hs.stores.events.get_room(child["state_key"]) is not None:
                inaccessible.append(child["state_key"])
        return {"room": root, "children": children, "inaccessible_children": inaccessible}

    async def hierarchy(
        self,
        requester: Requester,
        room_id: str,
        max_depth: int | None,
        suggested_only: bool,
        limit: int,
        from_token: str | None,
        as_admin: bool = False,
    ) -> JsonDict:
        """The space tree under a room, depth first. A server admin sees every room this
        server knows (not asking other servers), whatever the join rules and memberships."""

        async def summarize(room: str) -> JsonDict | None:
            if as_admin:
                return await self._summary_for(room, _nobody, _no_rooms, see_all=True)
            return await self._summary(requester, room)

        root = await summarize(room_id)
        if root is None:
            if as_admin:
                raise not_found("Unknown room")
            # The spec lists "the room does not exist" among the reasons for 403.
            raise forbidden("You may not see this space")
        # Depth-first (as the spec says), children in their spec order, each room once, as
        # deep as allowed.
        ordered: list[JsonDict] = []
        stack: list[tuple[JsonDict, int]] = [(root, 0)]
        seen = {room_id}
        while stack:
            summary, depth = stack.pop()
            ordered.append(summary)
            if max_depth is not None and depth >= max_depth:
                continue
            children: list[tuple[JsonDict, int]] = []
            for child in sorted(summary["children_state"], key=_child_order):
                child_id = child["state_key"]
                if child_id in seen:
                    continue
                if suggested_only and child["content"].get("suggested") is not True:
                    continue
                seen.add(child_id)
                child_summary = await summarize(child_id)
                if child_summary is not None:
                    children.append((child_summary, depth + 1))
            stack.extend(reversed(children))
        # The token carries the parameters, which may not change between pages.
        params = f"{int(suggested_only)}_{'' if max_depth is None else max_depth}"
        offset = 0
        if from_token is not None:
            offset_text, _, token_params = from_token.partition("_")
            if token_params != params:
                raise invalid_param(
                    "suggested_only and max_depth cannot change on paginated requests"
                )
            offset = _offset(offset_text)
        page = ordered[offset : offset + limit]
        response: JsonDict = {"rooms": page}
        if offset + limit < len(ordered):
            response["next_batch"] = f"o{offset + limit}_{params}"
        return response

    # Reports

    async def report(
        self,
        requester: Requester,
        room_id: str | None,
        event_id: str | None,
        target_user: str | None,
        body: JsonDict,
    ) -> None:
        reason = body.get("reason")
        score = body.get("score")
        if reason is not None and not isinstance(reason, str):
            raise bad_json("reason must be a string")
        if event_id is None and reason is None:
            # Required for rooms and users (optional only for events).
            raise MatrixError(400, Codes.MISSING_PARAM, "reason is required")
        if score is not None and (not isinstance(score, int) or not -100 <= score <= 0):
            raise bad_json("score must be an integer from -100 to 0")
        if event_id is not None:
            assert room_id is not None
            await self.access.check_event_visible(requester.user_id, room_id, event_id)
            # The spec: the caller must be joined to the room to report one of its events.
            if await self.access.membership(requester.user_id, room_id) != "join":
                raise not_found("Event not found")
        elif room_id is not None:
            if await self.hs.stores.events.get_room(room_id) is None:
                raise not_found("Unknown room")
        elif target_user is not None and await self.hs.stores.users.get_user(target_user) is None:
            raise not_found("Unknown user")
        await self.store.add_report(
            requester.user_id, room_id, event_id, target_user, reason, score,
            self.hs.clock.time_msec(),
        )  # fmt: skip


async def _no_rooms() -> set[str]:
    return set()


def _nobody(key: tuple[str, str]) -> bool:
    return False
