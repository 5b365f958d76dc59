"""Presence: online / unavailable / offline and a status message, shared with users who share
a room. Kept in memory (like typing); can be switched off in the config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

from homeserver.caches import MeasuredLRU
from homeserver.errors import Codes, MatrixError, forbidden, not_found

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]
STATES = ("online", "unavailable", "offline")
MAX_STATUS_LENGTH = 1024
# Without activity for this long an online user is reported as not currently active.
ACTIVE_WINDOW_MS = 60_000


@dataclass
class UserPresence:
    state: str
    status_msg: str | None
    last_active_ms: int
    position: int


class PresenceService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.enabled = hs.config.presence.enabled
        self.position = 0
        # The least recently updated users are forgotten first (shown offline).
        self._users: LRUCache[str, UserPresence] = MeasuredLRU("presence")

    def forget_user(self, user_id: str) -> None:
        self._users.pop(user_id, None)

    def _require_enabled(self) -> None:
        if not self.enabled:
            raise MatrixError(403, Codes.FORBIDDEN, "Presence is disabled on this server")

    async def set_state(
        self, user_id: str, state: str, status_msg: str | None = None, keep_message: bool = False
    ) -> None:
        if not self.enabled:
            return
        if state not in STATES:
            raise MatrixError(400, Codes.INVALID_PARAM, f"presence must be one of {STATES}")
        if status_msg is not None and len(status_msg) > MAX_STATUS_LENGTH:
            raise MatrixError(400, Codes.INVALID_PARAM, "status_msg is too long")
        previous = self._users.get(user_id)
        if keep_message and previous is not None:
            # A sync saying "online" does not undo a status the user chose explicitly.
            status_msg = previous.status_msg
            if state == "online" and previous.state == "unavailable":
                state = "unavailable"
        now = self.hs.clock.time_msec()
        if previous is not None and previous.state == state and previous.status_msg == status_msg:
            previous.last_active_ms = now
            return
        self.position += 1
        self._users[user_id] = UserPresence(state, status_msg, now, self.position)
        watchers = await self._notify_watchers(user_id)
        if self.hs.accounts.is_local(user_id):
            servers = {w.split(":", 1)[1] for w in watchers if ":" in w}
            content = {"user_id": user_id, **self._content(user_id, self._users[user_id])}
            await self.hs.federation_sender.send_edu(servers, "m.presence", {"push": [content]})

    async def apply_remote(self, origin: str, update: Any) -> None:
        """One entry of another server's m.presence EDU, for one of its own users."""
        if not self.enabled or not isinstance(update, dict):
            return
        user_id, state = update.get("user_id"), update.get("presence")
        if not isinstance(user_id, str) or not user_id.endswith(":" + origin):
            return
        if state not in STATES:
            return
        message = update.get("status_msg")
        ago = update.get("last_active_ago")
        now = self.hs.clock.time_msec()
        last_active = now - ago if isinstance(ago, int) and 0 <= ago < now else now
        self.position += 1
        self._users[user_id] = UserPresence(
            state, message if isinstance(message, str) else None, last_active, self.position
        )
        await self._notify_watchers(user_id)

    async def _notify_watchers(self, user_id: str) -> set[str]:
        watchers = {user_id}
        for room_id in await self.hs.stores.events.get_rooms_for_user(user_id, ["join"]):
            watchers |= await self.hs.room_events.joined_users(room_id)
        self.hs.notifier.notify_users(watchers)
        return watchers

    def _content(self, user_id: str, presence: UserPresence) -> JsonDict:
        now = self.hs.clock.time_msec()
        content: JsonDict = {
            "presence": presence.state,
            "last_active_ago": max(0, now - presence.last_active_ms),
            "currently_active": presence.state == "online"
            and now - presence.last_active_ms < ACTIVE_WINDOW_MS,
        }
        if presence.status_msg is not None:
            content["status_msg"] = presence.status_msg
        return content

    async def get(self, requester_id: str, user_id: str) -> JsonDict:
        self._require_enabled()
        if requester_id != user_id and not await self._share_a_room(requester_id, user_id):
            raise forbidden("You do not share a room with this user")
        local = self.hs.accounts.is_local(user_id)
        if local and await self.hs.stores.users.get_user(user_id) is None:
            raise not_found("Unknown user")
        presence = self._users.get(user_id)
        if presence is None:
            return {"presence": "offline"}
        return self._content(user_id, presence)

    async def _share_a_room(self, a: str, b: str) -> bool:
        rooms_a = set(await self.hs.stores.events.get_rooms_for_user(a, ["join"]))
        rooms_b = set(await self.hs.stores.events.get_rooms_for_user(b, ["join"]))
        return bool(rooms_a & rooms_b)

    async def events_since(
        self, user_id: str, since: int, joined_rooms: list[str]
    ) -> list[JsonDict]:
        """m.presence events of the user and everyone sharing a room, changed after ``since``."""
        if not self.enabled or since >= self.position:
            return []
        visible = {user_id}
        for room_id in joined_rooms:
            visible |= await self.hs.room_events.joined_users(room_id)
        # Whichever side is smaller is walked: the people the user shares rooms with, or
        # everyone whose presence is known.
        if len(visible) <= len(self._users):
            known = ((other, self._users.get(other)) for other in visible)
        else:
            known = ((o, p) for o, p in self._users.items() if o in visible)
        return [
            {"type": "m.presence", "sender": other, "content": self._content(other, presence)}
            for other, presence in known
            if presence is not None and presence.position > since
        ]
