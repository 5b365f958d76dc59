"""Applies a room's ``m.room.server_acl`` to whatever another server asks of it or sends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rooms.server_acl import server_allowed

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class ServerAcl:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def allows(self, server_name: str, room_id: str) -> bool:
        key = ("m.room.server_acl", "")
        acl_id = (await self.hs.stores.events.get_current_state_ids_for(room_id, [key])).get(key)
        if acl_id is None:
            return True
        acl = await self.hs.room_events.get_event(acl_id)
        return acl is None or server_allowed(server_name, acl.data.get("content"))
