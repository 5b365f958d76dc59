"""Device management: the user's list of sessions, with where each was last seen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import client_paths, parse_json_object, require
from homeserver.services.uia import PASSWORD
from homeserver.storage.devices import DeviceRecord

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def device_json(device: DeviceRecord) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
    }


def register(hs: HomeServer, router: Router) -> None:
    async def list_devices(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        devices = await hs.devices.get_devices(requester.user_id)
        return 200, {"devices": [device_json(d) for d in devices]}

    async def get_device(request: MatrixRequest, device_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, device_json(await hs.devices.get_device(requester.user_id, device_id))

    async def put_device(request: MatrixRequest, device_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request, allow_empty=True)
        name = hs.devices.check_display_name(body.get("display_name"))
        await hs.devices.rename(requester.user_id, device_id, name)
        return 200, {}

    async def delete_device(request: MatrixRequest, device_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request, allow_empty=True)
        await hs.devices.get_device(requester.user_id, device_id)  # 404 before asking for auth
        await hs.uia.authenticate(body, [[PASSWORD]], f"delete_device:{device_id}", requester)
        await hs.devices.delete_devices(requester.user_id, [device_id])
        return 200, {}

    async def delete_devices(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        device_ids = require(body, "devices", list)
        if not all(isinstance(d, str) for d in device_ids):
            from homeserver.errors import bad_json

            raise bad_json("'devices' must be a list of strings")
        operation = "delete_devices:" + ",".join(sorted(device_ids))
        await hs.uia.authenticate(body, [[PASSWORD]], operation, requester)
        await hs.devices.delete_devices(requester.user_id, device_ids)
        return 200, {}

    router.add("GET", client_paths("/devices"), list_devices, "devices")
    router.add("GET", client_paths("/devices/{device_id}"), get_device, "device")
    router.add("PUT", client_paths("/devices/{device_id}"), put_device, "device")
    router.add("DELETE", client_paths("/devices/{device_id}"), delete_device, "device")
    router.add("POST", client_paths("/delete_devices"), delete_devices, "delete_devices")
