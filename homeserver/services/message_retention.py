"""Scheduled deletion of one's own messages: a user who asks for it has their messages
older than the age they chose redacted, by themselves (as if they had clicked "remove"),
in every room they are in, by a job that runs every ``privacy.message_retention_interval``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from homeserver.errors import MatrixError
from rooms.message_retention import SETTING, RetentionSetting, parse_setting

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
BATCH = 200  # per room per run: a long history is worked through over several runs
REASON = "Deleted by the sender's message retention setting"


class MessageRetention:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    def start(self) -> None:
        self.hs.clock.every(self.hs.config.privacy.message_retention_interval_ms, self.run_once)

    async def run_once(self) -> int:
        """Apply every user's setting once; returns how many messages were redacted."""
        total = 0
        for user_id, content in await self.hs.stores.account_data.users_with(SETTING):
            setting = parse_setting(content)
            if setting is None or not self.hs.accounts.is_local(user_id):
                continue
            try:
                total += await self.apply(user_id, setting)
            except Exception:
                logger.exception("Message retention for %s failed", user_id)
        return total

    async def apply(self, user_id: str, setting: RetentionSetting) -> int:
        events = self.hs.stores.events
        cutoff = self.hs.clock.time_msec() - setting.max_age_ms
        kept_rooms = (
            await self.hs.account_data.direct_rooms(user_id) if setting.keep_direct else set()
        )
        redacted = 0
        for room_id in await events.get_rooms_for_user(user_id, ["join"]):
            if room_id in kept_rooms:
                continue
            pinned = await self._pinned(room_id) if setting.keep_pinned else set()
            for event_id in await events.own_messages_before(room_id, user_id, cutoff, BATCH):
                if event_id in pinned:
                    continue
                try:
                    await self.hs.room_events.send(
                        room_id, user_id, "m.room.redaction", {"reason": REASON}, redacts=event_id
                    )
                    redacted += 1
                except MatrixError as e:
                    logger.warning("Could not redact %s for %s: %s", event_id, user_id, e.msg)
        return redacted

    async def _pinned(self, room_id: str) -> set[str]:
        state = await self.hs.room_events.current_state_events(room_id)
        event = state.get(("m.room.pinned_events", ""))
        pinned = (event.data.get("content") or {}).get("pinned") if event else None
        return {p for p in pinned if isinstance(p, str)} if isinstance(pinned, list) else set()
