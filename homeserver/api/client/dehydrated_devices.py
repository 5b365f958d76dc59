"""Dehydrated devices (MSC3814, as Element uses it): a device that keeps receiving room
keys while all of a user's devices are offline, picked up later by a new device that can
decrypt its ``device_data`` (the server cannot)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, bad_json, not_found
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import optional, parse_json_object, require
from homeserver.services.auth import Requester
from homeserver.streams import parse_position

if TYPE_CHECKING:
    from homeserver.server import HomeServer

PREFIX = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
EVENTS_BATCH = 100


def register(hs: HomeServer, router: Router) -> None:
    store = hs.e2ee.store

    async def put_device(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        device_id = require(body, "device_id", str)
        device_data = require(body, "device_data", dict)
        name = optional(body, "initial_device_display_name", str, "Dehydrated device")
        if device_id in await hs.stores.devices.get_device_ids(requester.user_id):
            existing = await store.get_dehydrated_device(requester.user_id)
            if existing is None or existing[0] != device_id:
                raise MatrixError(400, Codes.INVALID_PARAM, "That device ID is in use")
        await hs.devices.ensure_device(requester.user_id, device_id, name)
        replaced = await store.set_dehydrated_device(requester.user_id, device_id, device_data)
        if replaced is not None and replaced != device_id:
            await hs.devices.delete_devices(requester.user_id, [replaced])
        keys: dict[str, Any] = {
            k: body[k] for k in ("device_keys", "one_time_keys", "fallback_keys") if k in body
        }
        if keys:
            await hs.e2ee.upload_keys(Requester(requester.user_id, device_id, ""), keys)
        return 200, {"device_id": device_id}

    async def get_device(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        found = await store.get_dehydrated_device(requester.user_id)
        if found is None:
            raise not_found("No dehydrated device")
        return 200, {"device_id": found[0], "device_data": found[1]}

    async def delete_device(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        device_id = await store.delete_dehydrated_device(requester.user_id)
        if device_id is None:
            raise not_found("No dehydrated device")
        await hs.devices.delete_devices(requester.user_id, [device_id])
        return 200, {"device_id": device_id}

    async def events(request: MatrixRequest, device_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        found = await store.get_dehydrated_device(requester.user_id)
        if found is None or found[0] != device_id:
            raise not_found("No such dehydrated device")
        body = parse_json_object(request, allow_empty=True)
        since = body.get("next_batch")
        acknowledged = 0
        if since is not None:
            parsed = parse_position(since) if isinstance(since, str) else None
            if parsed is None:
                raise bad_json("next_batch must be a token from an earlier answer")
            acknowledged = parsed
        messages = await store.take_to_device(
            requester.user_id, device_id, acknowledged, hs.e2ee.to_device.current, EVENTS_BATCH
        )
        next_batch = str(messages[-1][0]) if messages else str(acknowledged)
        return 200, {"events": [m for _, m in messages], "next_batch": next_batch}

    router.add("PUT", PREFIX, put_device, "dehydrated_device")
    router.add("GET", PREFIX, get_device, "dehydrated_device")
    router.add("DELETE", PREFIX, delete_device, "dehydrated_device")
    router.add("POST", PREFIX + "/{device_id}/events", events, "dehydrated_device_events")
