"""Server notices: messages from the operator, sent by a system user into a room of its own
with each user, tagged ``m.server_notice``. The user may leave it but not write in it."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, not_found
from homeserver.services.auth import Requester
from homeserver.storage.users import UserExistsError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]


class ServerNotices:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config = hs.config.server_notices
        localpart = self.config.system_mxid_localpart
        self.system_user = hs.accounts.user_id_for(localpart) if localpart else None

    async def send(
        self, user_id: str, content: JsonDict, event_type: str = "m.room.message",
        state_key: str | None = None, txn: tuple[str, str] | None = None,
    ) -> str:  # fmt: skip
        """Send a notice; `txn` (admin, transaction ID) makes a retry return the first
        notice's event instead of sending again."""
        if self.system_user is None:
            raise MatrixError(400, Codes.UNKNOWN, "Server notices are not enabled on this server")
        if txn is not None:
            done = await self.hs.admin.store.notice_txn(*txn)
            if done is not None:
                return done
        user = await self.hs.stores.users.get_user(user_id)
        if not self.hs.accounts.is_local(user_id) or user is None or user.deactivated:
            raise not_found("No such user on this server")
        room_id = await self._room_for(user_id)
        event = await self.hs.room_events.send(
            room_id, self.system_user, event_type, content, state_key=state_key
        )
        if txn is not None:
            await self.hs.admin.store.record_notice_txn(*txn, event.event_id)
        return event.event_id

    async def _ensure_system_user(self) -> str:
        assert self.system_user is not None
        if await self.hs.stores.users.get_user(self.system_user) is None:
            with contextlib.suppress(UserExistsError, MatrixError):  # created meanwhile
                await self.hs.accounts.create_account(
                    self.system_user[1:].split(":", 1)[0], None,
                    displayname=self.config.system_mxid_display_name,
                )  # fmt: skip
        return self.system_user

    async def _room_for(self, user_id: str) -> str:
        """The user's notices room, made (and the user invited) when there is none they are
        still in or invited to."""
        system = await self._ensure_system_user()
        room_id = await self.hs.admin.store.notice_room(user_id)
        if room_id is not None:
            membership = await self.hs.room_access.membership(user_id, room_id)
            if membership in ("join", "invite"):
                return room_id
        created = await self.hs.rooms.create_room(Requester(system, "", ""), {
            "preset": "private_chat",
            "name": self.config.room_name,
            "power_level_content_override": {"events_default": 100, "invite": 100},
        })  # fmt: skip
        room_id = str(created["room_id"])
        await self.hs.room_events.send(room_id, system, "m.room.member",
                                       {"membership": "invite"}, state_key=user_id)  # fmt: skip
        await self.hs.account_data.write(
            user_id, room_id, "m.tag", {"tags": {"m.server_notice": {"order": 0.5}}}
        )
        await self.hs.admin.store.set_notice_room(user_id, room_id)
        return room_id
