"""Shutting a room down for the admin API: local members moved out (optionally into a new
room with a message), aliases and directory entry removed, the room blocked, and its
history purged from the database. Runs as a background task; safe to redo after a stop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError
from homeserver.services.auth import Requester

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
DELETE_ROOM = "shutdown_and_purge_room"
DEFAULT_NAME = "Content Violation Notification"
DEFAULT_MESSAGE = "The room you were in has been shut down by the server's administrators."


class RoomShutdown:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        hs.tasks.register(DELETE_ROOM, self._run)

    async def _run(self, task: JsonDict) -> JsonDict:
        hs = self.hs
        room_id = str(task["resource_id"])
        params = task["params"]
        admin = str(params["admin"])
        result: JsonDict = {"kicked_users": [], "failed_to_kick_users": [], "local_aliases": [],
                            "new_room_id": None}  # fmt: skip
        if params.get("block"):
            await hs.admin.store.set_blocked(room_id, admin, hs.clock.time_msec())
        if await hs.stores.events.get_room(room_id) is not None:
            new_room = None
            new_owner = params.get("new_room_user_id")
            if isinstance(new_owner, str):
                created = await hs.rooms.create_room(
                    Requester(new_owner, "", ""),
                    {"preset": "public_chat", "name": params.get("room_name") or DEFAULT_NAME},
                )
                new_room = str(created["room_id"])
                message = params.get("message") or DEFAULT_MESSAGE
                await hs.room_events.send(new_room, new_owner, "m.room.message",
                                          {"msgtype": "m.text", "body": message})  # fmt: skip
                result["new_room_id"] = new_room
            for alias in await hs.stores.events.get_aliases_for_room(room_id):
                await hs.stores.events.delete_alias(alias)
                result["local_aliases"].append(alias)
            await hs.stores.events.set_room_public(room_id, False)
            for user_id in sorted(await hs.room_events.joined_users(room_id)):
                if not hs.accounts.is_local(user_id):
                    continue
                try:
                    await self._member(room_id, user_id, "leave")
                    if new_room is not None:
                        await self._member(new_room, user_id, "join")
                    result["kicked_users"].append(user_id)
                except MatrixError as e:
                    logger.info("Could not move %s out of %s: %s", user_id, room_id, e)
                    result["failed_to_kick_users"].append(user_id)
                await hs.tasks.progress(task, {"shutdown_room": result})
            if params.get("purge", True):
                hs.room_events.forget_room(room_id)
                await hs.stores.events.purge_room(room_id)
                hs.room_events.forget_room(room_id)
        return {"shutdown_room": result}

    async def _member(self, room_id: str, user_id: str, membership: str) -> None:
        await self.hs.room_events.send(
            room_id, user_id, "m.room.member", {"membership": membership}, state_key=user_id
        )
