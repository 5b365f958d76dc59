"""Inbound transactions: each (origin, transaction ID) processed once, one transaction per
origin at a time; every PDU verified, its gaps filled, and persisted by the room's writer;
EDUs handed to their services."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet.defer import DeferredLock

from homeserver.errors import bad_json
from homeserver.federation.client import FederationError
from homeserver.federation.event_checks import InvalidPdu, verify_pdu
from homeserver.services.room_events import (
    EventRejected,
    MissingPrevEvents,
    SoftFailed,
    reference_id,
)
from homeserver.storage.events import StateIds
from rooms.events import compute_event_id
from rooms.layered_state import state_dict
from rooms.state_res import resolve_state
from rooms.versions import RoomVersion

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

MAX_PDUS_PER_TXN = 50
# How long an answered transaction ID is remembered: retries come within minutes.
TXN_MEMORY_MS = 24 * 3_600_000
MAX_EDUS_PER_TXN = 100
MISSING_EVENTS_LIMIT = 20


class FederationReceiver:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.federation
        self.events = hs.room_events
        self._locks: dict[str, DeferredLock] = {}

    def start(self) -> None:
        """Forget answered transaction IDs once no server would still retry them."""
        self.hs.clock.every(3_600_000, self._purge_old_transactions)

    async def _purge_old_transactions(self) -> None:
        await self.store.purge_inbound_txns(self.hs.clock.time_msec() - TXN_MEMORY_MS)

    async def on_transaction(self, origin: str, txn_id: str, body: Any) -> JsonDict:
        if not isinstance(body, dict):
            raise bad_json("A transaction must be a JSON object")
        pdus, edus = body.get("pdus", []), body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise bad_json("pdus and edus must be lists")
        if len(pdus) > MAX_PDUS_PER_TXN or len(edus) > MAX_EDUS_PER_TXN:
            raise bad_json("Too many PDUs or EDUs in one transaction")
        lock = self._locks.setdefault(origin, DeferredLock())
        try:
            async with lock:
                done = await self.store.get_inbound_txn(origin, txn_id)
                if done is not None:
                    return done
                results: JsonDict = {}
                for pdu in pdus:
                    event_id, error = await self._on_pdu(origin, pdu)
                    if event_id is not None:
                        results[event_id] = {"error": error} if error else {}
                for edu in edus:
                    await self.hs.federation_edus.on_edu(origin, edu)
                response = {"pdus": results}
                await self.store.store_inbound_txn(
                    origin, txn_id, response, self.hs.clock.time_msec()
                )
        finally:
            # One lock per origin with work in hand, not per origin ever (a repeated or
            # failed transaction too).
            if not lock.locked and not lock.waiting and self._locks.get(origin) is lock:
                del self._locks[origin]
        self.hs.federation_sender.wake(origin)
        return response

    async def _on_pdu(self, origin: str, pdu: Any) -> tuple[str | None, str | None]:
        if not isinstance(pdu, dict) or not isinstance(pdu.get("room_id"), str):
            return None, None
        room_id = pdu["room_id"]
        try:
            version = await self.events.room_version(room_id)
        except Exception:
            return None, None  # a room we are not in: nothing to do with it
        try:
            event_id = compute_event_id(pdu, version)
        except (ValueError, KeyError, TypeError):
            return None, None
        if not await self.hs.federation_acl.allows(origin, room_id):
            return event_id, "the room's server ACL refuses this server"
        try:
            await self.ingest(origin, pdu, version)
        except InvalidPdu as e:
            return event_id, f"invalid: {e}"
        except EventRejected as e:
            return event_id, f"rejected: {e.reason}"
        except SoftFailed as e:
            logger.info("Soft-failed %s from %s: %s", event_id, origin, e.reason)
            return event_id, None  # accepted as far as the origin is concerned
        except MissingPrevEvents as e:
            return event_id, f"missing prev events: {e.missing}"
        except FederationError as e:
            return event_id, f"could not fetch what it needs: {e}"
        except Exception:
            # One PDU's surprise must not fail the whole transaction (the origin would
            # resend it, and the PDUs after it, for ever).
            logger.exception("Could not process %s from %s", event_id, origin)
            return event_id, "could not be processed"
        return event_id, None

    async def ingest(
        self, origin: str, pdu: JsonDict, version: RoomVersion, fill_gaps: bool = True
    ) -> None:
        """Verify and persist one PDU, first fetching what it points at that we lack."""
        event = await verify_pdu(self.hs.keyring, pdu, version)
        try:
            await self.events.persist_received(event, version)
            return
        except MissingPrevEvents as e:
            if not fill_gaps:
                raise
            missing = e.missing
        room_id = str(event["room_id"])
        await self._fetch_missing(origin, room_id, event, version)
        try:
            await self.events.persist_received(event, version)
            return
        except MissingPrevEvents as e:
            missing = e.missing
        # The gap is too wide: take the state before the event from the origin.
        state = await self._state_at_prev_events(origin, room_id, missing, event, version)
        await self.events.persist_received(event, version, state_before=state)

    async def _fetch_missing(
        self, origin: str, room_id: str, event: JsonDict, version: RoomVersion
    ) -> None:
        earliest = await self.events.forward_extremities(room_id)
        event_id = compute_event_id(event, version)
        answer = await self.hs.federation_client.post_json(
            origin,
            f"/_matrix/federation/v1/get_missing_events/{quote(room_id, safe='')}",
            {
                "earliest_events": earliest,
                "latest_events": [event_id],
                "limit": MISSING_EVENTS_LIMIT,
                "min_depth": 0,
            },
        )
        found = answer.get("events") if isinstance(answer, dict) else None
        if not isinstance(found, list):
            return
        for missing in sorted(
            (e for e in found if isinstance(e, dict)), key=lambda e: _depth_of(e)
        ):
            if missing.get("room_id") != room_id:
                continue
            try:
                await self.ingest(origin, missing, version, fill_gaps=False)
            except (InvalidPdu, EventRejected, MissingPrevEvents, SoftFailed) as e:
                logger.info("Missing event from %s not usable: %s", origin, e)

    async def _state_at_prev_events(
        self,
        origin: str,
        room_id: str,
        missing: list[str],
        event: JsonDict,
        version: RoomVersion,
    ) -> StateIds:
        """The state before ``event``: the state after each prev event (asked of the origin
        for those we lack), resolved together."""
        prev_ids = [reference_id(p) for p in event.get("prev_events") or []]
        known = await self.events.get_events(prev_ids)
        state_sets: list[StateIds] = []
        for prev_id in prev_ids:
            prev = known.get(prev_id)
            if prev is not None and not prev.is_outlier and prev_id not in missing:
                state_sets.append(state_dict(await self.events.state_ids(prev.state_after)))
                continue
            state_sets.append(await self.hs.federation_events.state_after(origin, room_id, prev_id))
        if len(state_sets) == 1:
            return state_sets[0]
        needed = {e for s in state_sets for e in s.values()}
        await self.hs.federation_events.fetch_events(origin, room_id, needed, version)
        events = await self.events._auth_closure(needed)
        return resolve_state(state_sets, events, version)


def _depth_of(event: JsonDict) -> int:
    """An event's depth for ordering, whatever a remote server put there."""
    depth = event.get("depth")
    return depth if isinstance(depth, int) and not isinstance(depth, bool) else 0
