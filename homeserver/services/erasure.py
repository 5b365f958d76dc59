"""Erasing a user: what the server holds of them goes, and what they sent is kept only as
an event skeleton (its content pruned as a redaction would), for everyone from then on."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from crypto.canonical import canonical_json
from homeserver.storage.erasure import ErasureStore, SentEvent
from rooms.redaction import redact

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)


class ErasureService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = ErasureStore(hs.db)

    async def erase(self, user_id: str, addresses: list[str]) -> None:
        """Run after the account is deactivated (sessions gone, rooms left)."""
        await self.hs.media.delete_user_media(user_id)
        await self.store.delete_user_rows(user_id, addresses)
        pruned = 0
        for room_id in await self.hs.stores.events.rooms_ever_in(user_id):
            pruned += await self._prune_room(user_id, room_id)
        self.hs.push.forget_user(user_id)
        self.hs.room_events.forget_transactions_of(user_id)
        self.hs.account_data.forget_user(user_id)
        self.hs.presence.forget_user(user_id)
        logger.info("Erased %s: %d events pruned", user_id, pruned)

    async def _prune_room(self, user_id: str, room_id: str) -> int:
        """Prune the user's messages and every membership event about them in one room.
        Other state they set (a room's name or topic) belongs to the room and stays."""
        return await self.prune([
            event for event in await self.store.events_of(user_id, room_id)
            if event.state_key is None
            or (event.event_type == "m.room.member" and event.state_key == user_id)
        ])  # fmt: skip

    async def prune(self, events: list[SentEvent]) -> int:
        """Store events as a redaction leaves them (their content gone); returns how many
        changed."""
        replacements = {}
        for event in events:
            version = await self.hs.room_events.room_version(event.room_id)
            pruned = canonical_json(redact(json.loads(event.json), version)).decode("utf-8")
            if pruned != event.json:
                replacements[event.event_id] = pruned
        if replacements:
            await self.store.replace_event_json(replacements)
            for event_id in replacements:
                self.hs.room_events.invalidate_event(event_id)
        return len(replacements)
