"""Keeping messages no longer than rooms and the server say (MSC1763), and deleting the
original content of redacted events after ``retention.redaction_retention_period``.

A purge never touches state events (rooms need them to work) or a room's latest events
(its forward extremities), so every room keeps working after it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rooms.retention import max_lifetime

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
BATCH = 500


class RoomRetention:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config = hs.config.retention

    def start(self) -> None:
        self.hs.clock.every(int(self.config.purge_interval), self.run_once)

    async def run_once(self) -> dict[str, int]:
        purged = await self.purge_expired_messages() if self.config.enabled else 0
        pruned = await self.prune_redacted()
        if purged or pruned:
            logger.info("Retention: %d expired messages purged, %d redacted events pruned",
                        purged, pruned)  # fmt: skip
        return {"purged": purged, "pruned": pruned}

    async def purge_expired_messages(self) -> int:
        purged = 0
        now = self.hs.clock.time_msec()
        for room_id in await self.hs.admin.store.all_room_ids():
            try:
                purged += await self._purge_room(room_id, now)
            except Exception:
                logger.exception("Retention purge of %s failed", room_id)
        return purged

    async def _purge_room(self, room_id: str, now: int) -> int:
        state = await self.hs.room_events.current_state_events(room_id)
        policy = state.get(("m.room.retention", ""))
        lifetime = max_lifetime(
            policy.data.get("content") if policy else None,
            self.config.ms("default_max_lifetime"),
            self.config.ms("allowed_lifetime_min"),
            self.config.ms("allowed_lifetime_max"),
        )
        if lifetime is None:
            return 0
        events = self.hs.stores.events
        last = await events.last_event_before_ts(room_id, now - lifetime)
        if last is None:
            return 0
        purged = 0
        while True:
            ids = await events.purge_history_batch(room_id, last[1] + 1, None, BATCH)
            for event_id in ids:
                self.hs.room_events.invalidate_event(event_id)
            purged += len(ids)
            if len(ids) < BATCH:
                return purged

    async def prune_redacted(self) -> int:
        period = self.config.ms("redaction_retention_period")
        if period is None:
            return 0
        store = self.hs.erasure.store
        pruned = 0
        while True:
            events = await store.redacted_before(self.hs.clock.time_msec() - period, BATCH)
            if not events:
                return pruned
            pruned += await self.hs.erasure.prune(events)
            await store.mark_redactions_pruned([e.event_id for e in events])
            if len(events) < BATCH:
                return pruned
