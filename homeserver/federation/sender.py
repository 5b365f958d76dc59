"""Outbound transactions: one persisted queue per destination, sent in batches of up to
50 PDUs and 100 EDUs, retried with exponential back-off, resumed after a restart.

A local send only writes the queue rows; delivery runs in the background, one loop per
destination, so a slow or dead server never delays a send, a sync or another server.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from homeserver.federation.client import FederationError
from homeserver.storage.events import StoredEvent
from rooms.auth import domain_of

if TYPE_CHECKING:
    from homeserver.federation.client import FederationClient
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

MAX_PDUS = 50
MAX_EDUS = 100
FIRST_RETRY_MS = 5_000


class FederationSender:
    def __init__(self, hs: HomeServer, client: FederationClient) -> None:
        self.hs = hs
        self.client = client
        self.store = hs.stores.federation
        self.clock = hs.clock
        self.server_name = hs.config.server_name
        self._next_id = 0
        # Transaction IDs must never repeat for a destination, restarts included (it
        # would take a repeat for a retry and drop it): prefix them with the start time.
        self._epoch = hs.clock.time_msec()
        self._sending: set[str] = set()
        self._again: set[str] = set()
        self._retry_timers: dict[str, Any] = {}

    async def start(self) -> None:
        self._next_id = await self.store.max_outbox_id()
        for destination in await self.store.destinations_with_work():
            self._kick(destination)

    # What to send

    async def servers_in_room(self, room_id: str) -> set[str]:
        """The other servers with a joined member in the room."""
        joined = await self.hs.room_events.joined_users(room_id)
        return joined.servers() - {self.server_name, ""}

    async def on_new_event(self, event: StoredEvent) -> None:
        """Queue a local event for every other server in its room (and for the server of a
        remote user it removes, who is not in the room any more)."""
        data = event.data
        if domain_of(str(data.get("sender"))) != self.server_name:
            return
        destinations = await self.servers_in_room(event.room_id)
        if data.get("type") == "m.room.member" and isinstance(data.get("state_key"), str):
            destinations.add(domain_of(data["state_key"]))
        destinations -= {self.server_name, ""}
        await self._enqueue(
            [(d, "pdu", event.room_id, event.event_id) for d in sorted(destinations)]
        )

    async def send_edu(
        self, destinations: set[str], edu_type: str, content: JsonDict, room_id: str | None = None
    ) -> None:
        payload = json.dumps({"edu_type": edu_type, "content": content})
        targets = sorted(d for d in destinations if d and d != self.server_name)
        await self._enqueue([(d, "edu", room_id, payload) for d in targets])

    async def _enqueue(self, rows: list[tuple[str, str, str | None, str]]) -> None:
        if not rows:
            return
        numbered = []
        for destination, kind, room_id, payload in rows:
            self._next_id += 1
            numbered.append((self._next_id, destination, kind, room_id, payload))
        await self.store.enqueue(numbered, self.clock.time_msec())
        for destination in {r[0] for r in rows}:
            self._kick(destination)

    # Delivery

    def _kick(self, destination: str) -> None:
        if destination in self._sending:
            self._again.add(destination)
            return
        timer = self._retry_timers.pop(destination, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._sending.add(destination)
        defer.ensureDeferred(self._drain(destination))

    async def _drain(self, destination: str) -> None:
        try:
            while True:
                self._again.discard(destination)
                state = await self.store.get_destination(destination)
                now = self.clock.time_msec()
                if state.failure_ts is not None:
                    wait = state.failure_ts + state.retry_interval_ms - now
                    if wait > 0:
                        self._retry_later(destination, wait)
                        return
                    # Back after an outage: catch up with the latest event of each room;
                    # the destination fetches what lies between with get_missing_events.
                    if await self.store.count_outbox(destination, "pdu") > MAX_PDUS:
                        dropped = await self.store.collapse_outbox(destination)
                        logger.info("Catching %s up: %d older PDUs left for it to fetch",
                                    destination, dropped)  # fmt: skip
                sent = await self._send_one_transaction(destination)
                if sent is None:
                    return  # failed: retry scheduled
                if not sent and destination not in self._again:
                    return
        except Exception:
            logger.exception("Sending to %s failed unexpectedly", destination)
            self._retry_later(destination, FIRST_RETRY_MS)
        finally:
            self._sending.discard(destination)

    async def _send_one_transaction(self, destination: str) -> bool | None:
        """True if a transaction went out, False if nothing was queued, None on failure."""
        pdu_rows = await self.store.peek_outbox(destination, "pdu", MAX_PDUS)
        edu_rows = await self.store.peek_outbox(destination, "edu", MAX_EDUS)
        if not pdu_rows and not edu_rows:
            return False
        events = await self.hs.room_events.get_events(r.payload for r in pdu_rows)
        pdus = [json.loads(events[r.payload].json_text) for r in pdu_rows if r.payload in events]
        edus = [json.loads(r.payload) for r in edu_rows]
        first = min(r.id for r in pdu_rows + edu_rows)
        txn_id = f"{self._epoch}.{first}"
        body = {
            "origin": self.server_name,
            "origin_server_ts": self.clock.time_msec(),
            "pdus": pdus,
            "edus": edus,
        }
        try:
            await self.client.put_json(destination, f"/_matrix/federation/v1/send/{txn_id}", body)
        except FederationError as e:
            await self._failed(destination, e)
            return None
        await self.store.delete_outbox([r.id for r in pdu_rows + edu_rows])
        await self.store.set_destination(destination, None, 0, self.clock.time_msec())
        return True

    async def _failed(self, destination: str, error: Exception) -> None:
        state = await self.store.get_destination(destination)
        cap = self.hs.config.federation.max_retry_interval_ms
        interval = min(cap, max(FIRST_RETRY_MS, state.retry_interval_ms * 2))
        now = self.clock.time_msec()
        await self.store.set_destination(destination, now, interval, now)
        logger.info("Sending to %s failed (%s); retrying in %d s", destination, error,
                    interval // 1000)  # fmt: skip
        self._retry_later(destination, interval)

    def _retry_later(self, destination: str, delay_ms: int) -> None:
        old = self._retry_timers.pop(destination, None)
        if old is not None and old.active():
            old.cancel()
        self._retry_timers[destination] = self.clock.call_later(
            delay_ms, self._retry_now, destination
        )

    def _retry_now(self, destination: str) -> None:
        self._retry_timers.pop(destination, None)
        self._kick(destination)

    def wake(self, destination: str) -> None:
        """The destination showed it is up (it sent us something): if it was in back-off,
        retry at once instead of waiting out the interval."""
        timer = self._retry_timers.pop(destination, None)
        if timer is None:
            return
        if timer.active():
            timer.cancel()
        defer.ensureDeferred(self._reset_and_kick(destination))

    async def _reset_and_kick(self, destination: str) -> None:
        await self.store.set_destination(destination, None, 0, self.clock.time_msec())
        self._kick(destination)
