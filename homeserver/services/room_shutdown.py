"""The admin API's long moderation jobs, each a background task safe to redo after a stop:
shutting a room down (local members moved out, optionally into a new room with a message,
aliases and directory entry removed, the room blocked, its history purged), purging a
room's old history, and redacting what a user sent."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError
from homeserver.services.auth import Requester
from rooms.power_levels import power_levels_from_state

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
DELETE_ROOM = "shutdown_and_purge_room"
REDACT_USER = "redact_all_events"
PURGE_HISTORY = "purge_history"
PURGE_BATCH = 500
DEFAULT_NAME = "Content Violation Notification"
DEFAULT_MESSAGE = "The room you were in has been shut down by the server's administrators."


class RoomShutdown:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        hs.tasks.register(DELETE_ROOM, self._run)
        hs.tasks.register(REDACT_USER, self._redact_user)
        hs.tasks.register(PURGE_HISTORY, self._purge_history)

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
                await hs.room_events.purge_room(room_id)
        return {"shutdown_room": result}

    async def _member(self, room_id: str, user_id: str, membership: str) -> None:
        await self.hs.room_events.send(
            room_id, user_id, "m.room.member", {"membership": membership}, state_key=user_id
        )

    async def _purge_history(self, task: JsonDict) -> JsonDict:
        """Delete the room's messages older than the purge point, in batches; state events,
        forward extremities and (unless asked) our own users' events are kept."""
        hs = self.hs
        room_id = str(task["resource_id"])
        params = task["params"]
        keep = None if params.get("delete_local_events") else hs.config.server_name
        purged = 0
        while True:
            ids = await hs.stores.events.purge_history_batch(
                room_id, int(params["before"]), keep, PURGE_BATCH
            )
            for event_id in ids:
                hs.room_events.invalidate_event(event_id)
            purged += len(ids)
            await hs.tasks.progress(task, {"purged_events": purged})
            if len(ids) < PURGE_BATCH:
                return {"purged_events": purged}

    async def _redact_user(self, task: JsonDict) -> JsonDict:
        """Redact what a user sent, room by room (for moderation tools): each redaction
        sent by the user if still joined, else by a local member allowed to redact."""
        hs = self.hs
        user_id = str(task["resource_id"])
        params = task["params"]
        rooms = params.get("rooms") or []
        if not rooms:
            for membership in ("join", "leave", "ban", "invite"):
                rooms += await hs.stores.events.get_rooms_for_user(user_id, [membership])
        limit = int(params.get("limit") or 1000)
        failed: JsonDict = {}
        redacted = 0
        for room_id in dict.fromkeys(rooms):
            if await hs.stores.events.get_room(room_id) is None:
                continue
            rows = await hs.stores.events.get_room_event_ids(
                room_id, None, None, True, limit, None, [user_id]
            )
            events = await hs.room_events.get_events(e for e, _ in rows)
            redactor = await self._redactor(room_id, user_id)
            for event_id, _ in rows:
                event = events.get(event_id)
                if event is None or event.redacted_by or event.data.get("type") in (
                    "m.room.member", "m.room.create", "m.room.redaction",
                ):  # fmt: skip
                    continue
                if redactor is None:
                    failed[event_id] = "nobody on this server may redact in this room"
                    continue
                content: JsonDict = {}
                if isinstance(params.get("reason"), str):
                    content["reason"] = params["reason"]
                try:
                    await hs.room_events.send(room_id, redactor, "m.room.redaction", content,
                                              redacts=event_id)  # fmt: skip
                    redacted += 1
                except MatrixError as e:
                    failed[event_id] = e.msg
            await hs.tasks.progress(task, {"failed_redactions": failed, "redacted": redacted})
        return {"failed_redactions": failed, "redacted": redacted}

    async def _redactor(self, room_id: str, user_id: str) -> str | None:
        hs = self.hs
        joined = await hs.room_events.joined_users(room_id)
        if user_id in joined:
            return user_id
        version = await hs.room_events.room_version(room_id)
        state = await hs.room_events.current_state_events(room_id)
        power = power_levels_from_state({k: v.data for k, v in state.items()}, version)
        local = [
            u for u in joined if hs.accounts.is_local(u) and power.user_level(u) >= power.redact
        ]
        return sorted(local)[0] if local else None
