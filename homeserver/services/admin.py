"""Administration: what the admin API shows of users and rooms (in Synapse's shapes, so
existing admin tools work), and the audit log of every admin look at or change to a
user's data. Never shown: password hashes, access tokens, key-backup session data,
to-device contents, one-time keys."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from homeserver.errors import not_found
from homeserver.http.server import MatrixRequest
from homeserver.services.auth import Requester
from homeserver.storage.admin import AdminStore, AdminUser
from rooms.power_levels import creators

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]


class AdminService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = AdminStore(hs.db)

    async def start(self) -> None:
        """Load the rate-limit exceptions, and keep the audit log within its retention."""
        self.hs.ratelimiter.overrides = await self.store.get_overrides()
        await self.purge_audit_log()
        self.hs.clock.every(3_600_000, self.purge_audit_log)

    async def purge_audit_log(self) -> None:
        retention = int(self.hs.config.admin.audit_log_retention)
        await self.store.purge_audit(self.hs.clock.time_msec() - retention)

    async def audit(
        self,
        request: MatrixRequest,
        admin: Requester,
        action: str,
        user_id: str | None = None,
        room_id: str | None = None,
        details: JsonDict | None = None,
    ) -> None:
        """Record that ``admin`` did ``action`` to a user's or room's data."""
        await self.store.audit(
            self.hs.clock.time_msec(), admin.user_id, action, user_id, room_id,
            self.hs.auth.client_address(request), details,
        )  # fmt: skip

    async def require_user(self, user_id: str) -> AdminUser:
        user = await self.store.get_user(user_id) if self.hs.accounts.is_local(user_id) else None
        if user is None:
            raise not_found("User not found")
        return user

    @staticmethod
    def user_json(user: AdminUser) -> JsonDict:
        """The fields synapse-admin reads; creation_ts in seconds, as Synapse gives it."""
        return {
            "name": user.user_id,
            "user_type": user.user_type,
            "is_guest": False,
            "admin": user.is_admin,
            "deactivated": user.deactivated,
            "erased": user.erased,
            "shadow_banned": user.shadow_banned,
            "displayname": user.displayname,
            "avatar_url": user.avatar_url,
            "creation_ts": user.created_ts // 1000,
            "approved": True,
            "locked": user.locked,
            "suspended": user.suspended,
            "last_seen_ts": user.last_seen_ts,
        }

    async def user_details(self, user: AdminUser) -> JsonDict:
        details = self.user_json(user)
        details["threepids"] = [
            {"medium": t["medium"], "address": t["address"], "added_at": t["added_at"],
             "validated_at": t["validated_at"]}
            for t in await self.hs.threepids.list(user.user_id)
        ]  # fmt: skip
        details.update({
            "external_ids": [
                {"auth_provider": provider, "external_id": external_id}
                for provider, external_id in await self.hs.stores.users.get_external_ids(
                    user.user_id
                )
            ],
            "appservice_id": None, "consent_server_notice_sent": None,
            "consent_version": None, "consent_ts": None,
        })  # fmt: skip
        return details

    async def room_json(self, room_id: str, full: bool = False) -> JsonDict:
        room = await self.hs.stores.events.get_room(room_id)
        if room is None:
            raise not_found("Room not found")
        state = await self.hs.room_events.current_state_events(room_id)

        def value(event_type: str, key: str) -> Any:
            event = state.get((event_type, ""))
            return (event.data.get("content") or {}).get(key) if event else None

        joined = [
            k for (t, k), e in state.items()
            if t == "m.room.member" and (e.data.get("content") or {}).get("membership") == "join"
        ]  # fmt: skip
        version = await self.hs.room_events.room_version(room_id)
        create = state.get(("m.room.create", ""))
        room_creators = creators(create.data, version) if create else set()
        result: JsonDict = {
            "room_id": room_id,
            "name": value("m.room.name", "name"),
            "canonical_alias": value("m.room.canonical_alias", "alias"),
            "joined_members": len(joined),
            "joined_local_members": sum(1 for u in joined if self.hs.accounts.is_local(u)),
            "version": room[0],
            "creator": sorted(room_creators)[0] if room_creators else room[1],
            "encryption": value("m.room.encryption", "algorithm"),
            "federatable": value("m.room.create", "m.federate") is not False,
            "public": bool(room[2]),
            "join_rules": value("m.room.join_rules", "join_rule"),
            "guest_access": value("m.room.guest_access", "guest_access"),
            "history_visibility": value("m.room.history_visibility", "history_visibility"),
            "state_events": len(state),
            "room_type": value("m.room.create", "type"),
        }
        if full:
            result["avatar"] = value("m.room.avatar", "url")
            result["topic"] = value("m.room.topic", "topic")
            result["joined_local_devices"] = 0
            for user_id in joined:
                if self.hs.accounts.is_local(user_id):
                    result["joined_local_devices"] += len(
                        await self.hs.stores.devices.get_device_ids(user_id)
                    )
            result["blocked"] = await self.store.blocked_by(room_id) is not None
        return result

    async def room_media(self, room_id: str) -> JsonDict:
        """The mxc:// URIs a room's events mention, ours and other servers'."""
        await self.room_json(room_id)
        local: set[str] = set()
        remote: set[str] = set()
        rows = await self.hs.stores.events.get_room_event_ids(room_id, None, None, True, 10_000)
        events = await self.hs.room_events.get_events(e for e, _ in rows)
        for event in events.values():
            text = json.dumps(event.data.get("content") or {})
            for match in _MXC.finditer(text):
                uri = f"mxc://{match.group(1)}/{match.group(2)}"
                (local if match.group(1) == self.hs.config.server_name else remote).add(uri)
        return {"local": sorted(local), "remote": sorted(remote),
                "total": len(local) + len(remote)}  # fmt: skip


_MXC = re.compile(r"mxc://([^/\"\s]+)/([A-Za-z0-9_-]+)")
