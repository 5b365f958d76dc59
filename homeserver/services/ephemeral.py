"""Typing notifications (memory only) and read receipts (stored), both streams for /sync."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

from homeserver.caches import MeasuredLRU
from homeserver.errors import forbidden, invalid_param
from homeserver.streams import StreamIdGenerator

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]
MAX_TYPING_TIMEOUT_MS = 120_000
RECEIPT_TYPES = ("m.read", "m.read.private")


class TypingService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.clock = hs.clock
        self.position = 0
        # room -> user -> expiry (ms); room -> position of its last change
        # Rooms with someone typing now (a room leaves when its last typer stops).
        self._typing: dict[str, dict[str, int]] = {}
        # When each room's typing last changed: the rooms least recently changed are
        # forgotten first (a sync older than that sees no change, harmlessly).
        self._changed_at: LRUCache[str, int] = MeasuredLRU("typing_changes")
        self._timers: dict[tuple[str, str], Any] = {}

    async def set_typing(self, user_id: str, room_id: str, typing: bool, timeout_ms: int) -> None:
        if await self.hs.room_access.membership(user_id, room_id) != "join":
            raise forbidden("You are not joined to this room")
        if self.hs.accounts.is_local(user_id):
            servers = await self.hs.federation_sender.servers_in_room(room_id)
            await self.hs.federation_sender.send_edu(
                servers, "m.typing", {"room_id": room_id, "user_id": user_id, "typing": typing}
            )
        timer = self._timers.pop((room_id, user_id), None)
        if timer is not None and timer.active():
            timer.cancel()
        users = self._typing.get(room_id, {})
        if typing:
            self._typing[room_id] = users
            timeout_ms = max(0, min(timeout_ms, MAX_TYPING_TIMEOUT_MS))
            users[user_id] = self.clock.time_msec() + timeout_ms
            self._timers[(room_id, user_id)] = self.clock.call_later(
                timeout_ms, self._expire, room_id, user_id
            )
        elif user_id in users:
            del users[user_id]
        else:
            return
        if not users:
            self._typing.pop(room_id, None)
        await self._changed(room_id)

    def _expire(self, room_id: str, user_id: str) -> None:
        self._timers.pop((room_id, user_id), None)
        users = self._typing.get(room_id, {})
        if users.pop(user_id, None) is not None:
            if not users:
                self._typing.pop(room_id, None)
            from twisted.internet import defer

            defer.ensureDeferred(self._changed(room_id))

    async def _changed(self, room_id: str) -> None:
        self.position += 1
        self._changed_at[room_id] = self.position
        self.hs.notifier.notify_users(await self.hs.stores.events.get_joined_users(room_id))

    def event_if_changed(self, room_id: str, since: int) -> JsonDict | None:
        """The room's m.typing event if it changed after ``since``."""
        if self._changed_at.get(room_id, 0) <= since:
            return None
        return self.event(room_id)

    def event(self, room_id: str) -> JsonDict:
        return {"type": "m.typing", "content": {"user_ids": sorted(self._typing.get(room_id, {}))}}


class ReceiptService:
    def __init__(self, hs: HomeServer, current: int) -> None:
        self.hs = hs
        self.store = hs.stores.sync
        self.stream = StreamIdGenerator(current)

    async def put_receipt(
        self, user_id: str, room_id: str, receipt_type: str, event_id: str, thread_id: str | None
    ) -> None:
        if receipt_type not in RECEIPT_TYPES:
            raise invalid_param(f"Unknown receipt type {receipt_type!r}")
        await self.hs.room_access.check_event_visible(user_id, room_id, event_id)
        with self.stream.next_id() as stream_id:
            await self.store.put_receipt(
                room_id, receipt_type, user_id, thread_id or "", event_id,
                self.hs.clock.time_msec(), stream_id,
            )  # fmt: skip
        recipients = await self.hs.stores.events.get_joined_users(room_id)
        self.hs.notifier.notify_users([user_id] if receipt_type == "m.read.private" else recipients)
        if receipt_type == "m.read" and self.hs.accounts.is_local(user_id):
            data: JsonDict = {"ts": self.hs.clock.time_msec()}
            if thread_id:
                data["thread_id"] = thread_id
            servers = await self.hs.federation_sender.servers_in_room(room_id)
            await self.hs.federation_sender.send_edu(
                servers,
                "m.receipt",
                {room_id: {"m.read": {user_id: {"event_ids": [event_id], "data": data}}}},
                room_id,
            )

    async def receipt_events(
        self, user_id: str, room_ids: list[str], since: int, upto: int
    ) -> dict[str, JsonDict]:
        """room -> m.receipt event of the receipts that changed; private ones only your own."""
        by_room: dict[str, JsonDict] = {}
        for room_id, receipt_type, owner, thread, event_id, ts in await self.store.get_receipts(
            room_ids, since, upto
        ):
            if receipt_type == "m.read.private" and owner != user_id:
                continue
            content = by_room.setdefault(room_id, {})
            entry: JsonDict = {"ts": ts}
            if thread:
                entry["thread_id"] = thread
            content.setdefault(event_id, {}).setdefault(receipt_type, {})[owner] = entry
        return {room: {"type": "m.receipt", "content": c} for room, c in by_room.items()}
