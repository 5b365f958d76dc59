"""Account data: opaque per-user (and per-room) JSON that clients sync between devices."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

from homeserver.caches import MeasuredLRU
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.streams import StreamIdGenerator

if TYPE_CHECKING:
    from homeserver.server import HomeServer

# Types the server owns; clients change them through their own APIs.
SERVER_MANAGED_TYPES = frozenset({"m.fully_read", "m.push_rules"})
IGNORED_USERS = "m.ignored_user_list"


class AccountDataService:
    def __init__(self, hs: HomeServer, current_stream_id: int) -> None:
        self.hs = hs
        self.store = hs.stores.account_data
        self.stream = StreamIdGenerator(current_stream_id)
        # Who each user ignores, read often (every read filters by it), written rarely.
        self._ignored: LRUCache[str, frozenset[str]] = MeasuredLRU("ignored_users")

    async def direct_rooms(self, user_id: str) -> set[str]:
        """The rooms the user's m.direct account data names as direct chats."""
        content = await self.store.get(user_id, "", "m.direct") or {}
        return {
            room_id
            for rooms in content.values() if isinstance(rooms, list)
            for room_id in rooms if isinstance(room_id, str)
        }  # fmt: skip

    def forget_user(self, user_id: str) -> None:
        self._ignored.pop(user_id, None)

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """The users whose events and invites ``user_id`` does not want to see."""
        cached = self._ignored.get(user_id)
        if cached is not None:
            return cached
        content = await self.store.get(user_id, "", IGNORED_USERS) or {}
        ignored = content.get("ignored_users")
        found = (
            frozenset(u for u in ignored if isinstance(u, str))
            if isinstance(ignored, dict)
            else frozenset()
        )
        self._ignored[user_id] = found
        return found

    async def get(self, requester_id: str, user_id: str, room_id: str, data_type: str) -> Any:
        if requester_id != user_id:
            raise forbidden("Cannot read another user's account data")
        content = await self.store.get(user_id, room_id, data_type)
        if content is None:
            raise not_found("Account data not found")
        return content

    async def put(
        self,
        requester_id: str,
        user_id: str,
        room_id: str,
        data_type: str,
        content: dict[str, Any],
    ) -> None:
        if requester_id != user_id:
            raise forbidden("Cannot change another user's account data")
        if data_type in SERVER_MANAGED_TYPES:
            raise MatrixError(
                405, "M_BAD_JSON", f"{data_type} is managed by the server and cannot be set here"
            )
        await self.write(user_id, room_id, data_type, content)

    async def write(
        self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]
    ) -> None:
        """Store without permission checks (for server-managed types) and wake the user's syncs."""
        if data_type == IGNORED_USERS and not room_id:
            ignored = content.get("ignored_users")
            if not isinstance(ignored, dict):
                raise MatrixError(400, "M_BAD_JSON", "ignored_users must be an object")
        with self.stream.next_id() as stream_id:
            await self.store.put(user_id, room_id, data_type, content, stream_id)
        if data_type == IGNORED_USERS:
            self._ignored.pop(user_id, None)
        self.hs.notifier.notify_users([user_id])
