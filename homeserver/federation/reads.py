"""What other servers may read from us: events, state, history, profiles and aliases.

Every event goes through the per-server visibility check first: a server gets only what
one of its users could see, and nothing of a room it has no member in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError, bad_json, forbidden, not_found
from homeserver.federation.membership import pdu_json
from homeserver.services.room_events import reference_id
from homeserver.storage.events import StoredEvent

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]

MAX_BACKFILL = 100


class FederationReads:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.events = hs.room_events
        self.access = hs.room_access
        self.server_name = hs.config.server_name

    async def _room_for(self, origin: str, room_id: str) -> None:
        await self.events.room_version(room_id)  # 404 for unknown rooms
        if not await self.hs.federation_acl.allows(origin, room_id):
            raise forbidden("Server is banned from this room")
        if not await self.access.server_has_members(origin, room_id):
            raise forbidden("Your server has no member in this room")

    async def _visible_event(self, origin: str, event_id: str) -> StoredEvent:
        event = await self.events.get_event(event_id)
        if event is None or event.is_outlier or event.rejected:
            raise not_found("Event not found")
        await self._room_for(origin, event.room_id)
        if not await self.access.filter_visible_to_server(origin, [event]):
            raise not_found("Event not found")
        return event

    def _transaction(self, pdus: list[JsonDict]) -> JsonDict:
        return {
            "origin": self.server_name,
            "origin_server_ts": self.hs.clock.time_msec(),
            "pdus": pdus,
        }

    async def event(self, origin: str, event_id: str) -> JsonDict:
        return self._transaction([pdu_json(await self._visible_event(origin, event_id))])

    async def state_ids(self, origin: str, room_id: str, event_id: str) -> JsonDict:
        """The state before ``event_id`` (IDs), and the auth chain of that state."""
        event = await self._visible_event(origin, event_id)
        if event.room_id != room_id:
            raise not_found("Event not found")
        state = await self.events.state_ids(event.state_before)
        chain = await self.hs.federation_membership.auth_chain(list(state.values()))
        return {
            "pdu_ids": sorted(state.values()),
            "auth_chain_ids": [e.event_id for e in chain],
        }

    async def state(self, origin: str, room_id: str, event_id: str) -> JsonDict:
        event = await self._visible_event(origin, event_id)
        if event.room_id != room_id:
            raise not_found("Event not found")
        state = await self.events.state_events(event.state_before)
        chain = await self.hs.federation_membership.auth_chain([e.event_id for e in state.values()])
        return {
            "pdus": [pdu_json(e) for e in state.values()],
            "auth_chain": [pdu_json(e) for e in chain],
        }

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> JsonDict:
        event = await self._visible_event(origin, event_id)
        if event.room_id != room_id:
            raise not_found("Event not found")
        chain = await self.hs.federation_membership.auth_chain([event.event_id])
        return {"auth_chain": [pdu_json(e) for e in chain]}

    async def backfill(
        self, origin: str, room_id: str, from_ids: list[str], limit: int
    ) -> JsonDict:
        """Up to ``limit`` events reached walking back from ``from_ids`` (included), newest
        first by depth, each one the server may see."""
        await self._room_for(origin, room_id)
        limit = max(1, min(limit, MAX_BACKFILL))
        seen: dict[str, StoredEvent] = {}
        frontier = list(dict.fromkeys(from_ids))
        while frontier and len(seen) < limit * 2:
            loaded = await self.events.get_events(frontier)
            frontier = []
            for event in loaded.values():
                if event.room_id != room_id or event.is_outlier or event.event_id in seen:
                    continue
                seen[event.event_id] = event
                frontier += [reference_id(p) for p in event.data.get("prev_events") or []]
        ordered = sorted(seen.values(), key=lambda e: -int(e.data.get("depth", 0)))[:limit]
        visible = await self.access.filter_visible_to_server(origin, ordered)
        return self._transaction([pdu_json(e) for e in visible])

    async def missing_events(self, origin: str, room_id: str, body: Any) -> JsonDict:
        """Events between what the server has (``earliest_events``) and what it just got
        (``latest_events``), walking prev_events back from the latter."""
        if not isinstance(body, dict):
            raise bad_json("Body must be an object")
        earliest, latest = body.get("earliest_events"), body.get("latest_events")
        if not isinstance(earliest, list) or not isinstance(latest, list):
            raise bad_json("earliest_events and latest_events must be lists")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise bad_json("limit must be an integer")
        limit = max(1, min(limit, 20))
        min_depth = body.get("min_depth", 0)
        if not isinstance(min_depth, int):
            min_depth = 0
        await self._room_for(origin, room_id)
        stop = {e for e in earliest if isinstance(e, str)}
        found: dict[str, StoredEvent] = {}
        starts = await self.events.get_events(e for e in latest if isinstance(e, str))
        frontier = [
            reference_id(p)
            for e in starts.values()
            if e.room_id == room_id
            for p in e.data.get("prev_events") or []
        ]
        while frontier and len(found) < limit:
            loaded = await self.events.get_events(frontier)
            frontier = []
            for event_id, event in loaded.items():
                if event_id in stop or event_id in found or event.room_id != room_id:
                    continue
                if event.is_outlier or int(event.data.get("depth", 0)) < min_depth:
                    continue
                found[event_id] = event
                frontier += [reference_id(p) for p in event.data.get("prev_events") or []]
        ordered = sorted(found.values(), key=lambda e: int(e.data.get("depth", 0)))[:limit]
        visible = await self.access.filter_visible_to_server(origin, ordered)
        return {"events": [pdu_json(e) for e in visible]}

    async def timestamp_to_event(
        self, origin: str, room_id: str, ts: int, forwards: bool
    ) -> JsonDict:
        await self._room_for(origin, room_id)
        event_id = await self.hs.stores.events.get_event_by_timestamp(room_id, ts, forwards)
        if event_id is None:
            raise not_found("No event found")
        event = await self._visible_event(origin, event_id)
        return {"event_id": event.event_id, "origin_server_ts": event.data["origin_server_ts"]}

    async def profile(self, user_id: str, field: str | None) -> JsonDict:
        if not self.hs.accounts.is_local(user_id):
            raise not_found("Not a user of this server")
        user = await self.hs.stores.users.get_user(user_id)
        if user is None or user.deactivated:
            raise not_found("No such user")
        profile = await self.hs.stores.profiles.get_profile(user_id)
        if field is not None:
            if field not in profile:
                raise not_found("No such profile field")
            return {field: profile[field]}
        return profile

    async def directory(self, alias: str) -> JsonDict:
        if not alias.endswith(":" + self.server_name):
            raise not_found("Not an alias of this server")
        found = await self.hs.stores.events.get_alias(alias)
        if found is None:
            raise not_found("Room alias not found")
        room_id = found[0]
        joined = await self.events.joined_users(room_id)
        servers = sorted(joined.servers() | {self.server_name})
        servers.remove(self.server_name)
        return {"room_id": room_id, "servers": [self.server_name, *servers]}


def parse_limit(value: str | None, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be a non-negative integer")
    return int(value)
