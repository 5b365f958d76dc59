"""Fetching what a received event points at from the server that sent it: single events
(kept as outliers once verified) and the state at an event."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from crypto.canonical import canonical_json
from homeserver.federation.client import FederationError
from homeserver.federation.event_checks import InvalidPdu, verify_pdu
from homeserver.storage.events import StateIds
from rooms.events import compute_event_id
from rooms.versions import RoomVersion

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_FETCH = 500


class FederationEvents:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.events = hs.room_events

    async def fetch_events(
        self, origin: str, room_id: str, event_ids: set[str], version: RoomVersion
    ) -> None:
        """Make sure we hold each event (verified; kept as an outlier if new)."""
        known = await self.events.get_events(event_ids)
        wanted = [e for e in event_ids if e not in known][:MAX_FETCH]
        rows = []
        for event_id in wanted:
            try:
                answer = await self.hs.federation_client.get_json(
                    origin, f"/_matrix/federation/v1/event/{quote(event_id, safe='')}"
                )
                pdus = answer.get("pdus") if isinstance(answer, dict) else None
                if not isinstance(pdus, list) or not pdus or not isinstance(pdus[0], dict):
                    continue
                event = await verify_pdu(self.hs.keyring, pdus[0], version)
            except (FederationError, InvalidPdu) as e:
                logger.info("Could not fetch %s from %s: %s", event_id, origin, e)
                continue
            if compute_event_id(event, version) != event_id or event.get("room_id") != room_id:
                continue
            rows.append((event_id, room_id, canonical_json(event).decode("utf-8"), False))
        if rows:
            await self.hs.stores.federation.store_outliers(rows)
            for event_id, *_ in rows:
                self.events.invalidate_event(event_id)

    async def state_after(self, origin: str, room_id: str, event_id: str) -> StateIds:
        """The state after ``event_id``, as the origin tells it (state_ids, then the event
        itself if it is a state event), with every event fetched."""
        return await self._state_at(origin, room_id, event_id, include_event=True)

    async def state_before(self, origin: str, room_id: str, event_id: str) -> StateIds:
        return await self._state_at(origin, room_id, event_id, include_event=False)

    async def backfill(self, room_id: str, limit: int) -> int:
        """Fetch history older than the oldest we hold from a server in the room; the
        number of events kept (0 when there is nothing older or nobody answered)."""
        extremities = await self.hs.stores.events.get_backward_extremities(room_id, 5)
        if not extremities:
            return 0
        version = await self.events.room_version(room_id)
        for server in sorted(await self.hs.federation_sender.servers_in_room(room_id)):
            try:
                answer = await self.hs.federation_client.get_json(
                    server,
                    f"/_matrix/federation/v1/backfill/{quote(room_id, safe='')}",
                    query={"v": extremities, "limit": str(limit)},
                    timeout_ms=10_000,
                )
            except FederationError as e:
                logger.info("Backfill from %s failed: %s", server, e)
                continue
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            verified = []
            for pdu in pdus if isinstance(pdus, list) else []:
                if not isinstance(pdu, dict) or pdu.get("room_id") != room_id:
                    continue
                try:
                    verified.append(await verify_pdu(self.hs.keyring, pdu, version))
                except InvalidPdu as e:
                    logger.info("Dropping a backfilled event from %s: %s", server, e)

            async def state_before(event_id: str, server: str = server) -> StateIds:
                return await self.state_before(server, room_id, event_id)

            return await self.events.persist_backfilled(verified, version, state_before)
        return 0

    async def _state_at(
        self, origin: str, room_id: str, event_id: str, include_event: bool
    ) -> StateIds:
        version = await self.events.room_version(room_id)
        answer = await self.hs.federation_client.get_json(
            origin,
            f"/_matrix/federation/v1/state_ids/{quote(room_id, safe='')}",
            query={"event_id": event_id},
        )
        if not isinstance(answer, dict):
            raise FederationError(origin, "state_ids answer is not an object")
        pdu_ids = _strings(answer.get("pdu_ids"))
        chain_ids = _strings(answer.get("auth_chain_ids"))
        await self.fetch_events(origin, room_id, {*pdu_ids, *chain_ids, event_id}, version)
        loaded = await self.events.get_events([*pdu_ids, event_id])
        state: StateIds = {}
        for state_id in pdu_ids:
            event = loaded.get(state_id)
            if event is not None and not event.rejected and "state_key" in event.data:
                state[(str(event.data["type"]), str(event.data["state_key"]))] = state_id
        prev = loaded.get(event_id)
        if include_event and prev is not None and "state_key" in prev.data and not prev.rejected:
            state[(str(prev.data["type"]), str(prev.data["state_key"]))] = event_id
        return state


def _strings(value: Any) -> list[str]:
    """The strings of a list a remote server sent (anything else: none)."""
    return [e for e in value if isinstance(e, str)] if isinstance(value, list) else []
