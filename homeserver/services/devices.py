"""Devices (sessions): creating them at login, listing, renaming and revoking them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from crypto.tokens import mint_device_id
from homeserver.errors import MatrixError, invalid_param, not_found
from homeserver.services.accounts import Session
from homeserver.storage.devices import DeviceRecord

if TYPE_CHECKING:
    from homeserver.server import HomeServer

MAX_DEVICE_ID_LENGTH = 255
MAX_DISPLAY_NAME_LENGTH = 512


class DeviceService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.devices
        self.clock = hs.clock

    def check_display_name(self, name: object) -> str | None:
        if name is None:
            return None
        if not isinstance(name, str):
            raise MatrixError(400, "M_BAD_JSON", "'display_name' must be a string")
        if len(name) > MAX_DISPLAY_NAME_LENGTH:
            raise invalid_param(f"Device display name is longer than {MAX_DISPLAY_NAME_LENGTH}")
        return name

    async def start_session(
        self,
        user_id: str,
        device_id: str | None,
        display_name: str | None,
        refreshable: bool = False,
    ) -> Session:
        """Create (or reuse) a device and give it a fresh access token."""
        device_id = await self.ensure_device(user_id, device_id, display_name)
        if refreshable:
            access, refresh, lifetime = await self.hs.auth.issue_refreshable(user_id, device_id)
            return Session(user_id, device_id, access, refresh, lifetime)
        token = await self.hs.auth.issue_token(user_id, device_id)
        return Session(user_id, device_id, token)

    async def ensure_device(
        self, user_id: str, device_id: str | None, display_name: str | None
    ) -> str:
        """The device, made if it does not exist (no session: the admin API's way)."""
        if device_id is not None and (
            not device_id or len(device_id) > MAX_DEVICE_ID_LENGTH or not device_id.isprintable()
        ):
            raise invalid_param("'device_id' must be 1 to 255 printable characters")
        device_id = device_id or mint_device_id()
        await self.store.ensure_device(user_id, device_id, display_name, self.clock.time_msec())
        return device_id

    def _with_pending_sightings(
        self, user_id: str, devices: list[DeviceRecord]
    ) -> list[DeviceRecord]:
        """Show sightings still waiting in the write buffer, so "last seen" is never stale."""
        pending = self.hs.client_ips.pending_for_user(user_id)
        result = []
        for device in devices:
            seen = pending.get(device.device_id)
            if seen is not None and (device.last_seen_ts or 0) <= seen[2]:
                device = replace(
                    device, last_seen_ip=seen[0], last_seen_user_agent=seen[1], last_seen_ts=seen[2]
                )
            result.append(device)
        return result

    async def get_devices(self, user_id: str) -> list[DeviceRecord]:
        return self._with_pending_sightings(user_id, await self.store.get_devices(user_id))

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord:
        device = await self.store.get_device(user_id, device_id)
        if device is None:
            raise not_found("Device not found")
        return self._with_pending_sightings(user_id, [device])[0]

    async def rename(self, user_id: str, device_id: str, display_name: str | None) -> None:
        if not await self.store.update_display_name(user_id, device_id, display_name):
            raise not_found("Device not found")

    async def delete_devices(self, user_id: str, device_ids: Iterable[str]) -> None:
        """Delete devices: their tokens stop working at once and their IP records are gone."""
        ids = list(device_ids)
        revoked = await self.store.delete_devices(user_id, ids)
        self.hs.auth.forget_tokens(revoked)
        for device_id in ids:
            self.hs.client_ips.forget_device(user_id, device_id)
            await self.hs.stores.sliding_sync.delete_for_device(user_id, device_id)
        if ids:
            await self.hs.e2ee.on_devices_deleted(user_id, ids)

    async def delete_all_devices(self, user_id: str, except_device: str | None = None) -> None:
        ids = [d for d in await self.store.get_device_ids(user_id) if d != except_device]
        await self.delete_devices(user_id, ids)
