"""End-to-end encryption: device and one-time keys, cross-signing, to-device messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import client_paths, parse_json_object, query_required, require
from homeserver.streams import SyncToken

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(hs: HomeServer, router: Router) -> None:
    e2ee = hs.e2ee

    async def upload(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, await e2ee.upload_keys(requester, parse_json_object(request))

    async def query(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, await e2ee.query_keys(requester, parse_json_object(request))

    async def claim(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.get_user_by_req(request)
        return 200, await e2ee.claim_keys(parse_json_object(request))

    async def changes(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        try:
            start = SyncToken.parse(query_required(request, "from"))
            end = SyncToken.parse(query_required(request, "to"))
        except ValueError:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid 'from' or 'to' token") from None
        return 200, await hs.sync.device_list_changes(requester.user_id, start, end)

    async def device_signing(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await e2ee.upload_cross_signing(requester, parse_json_object(request))
        return 200, {}

    async def signatures(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, await e2ee.upload_signatures(requester, parse_json_object(request))

    async def send_to_device(
        request: MatrixRequest, event_type: str, txn_id: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        await e2ee.send_to_device(requester, event_type, txn_id, require(body, "messages", dict))
        return 200, {}

    add = router.add
    add("POST", client_paths("/keys/upload"), upload, "keys_upload")
    add("POST", client_paths("/keys/query"), query, "keys_query")
    add("POST", client_paths("/keys/claim"), claim, "keys_claim")
    add("GET", client_paths("/keys/changes"), changes, "keys_changes")
    add("POST", client_paths("/keys/device_signing/upload"), device_signing, "keys_device_signing")
    add("POST", client_paths("/keys/signatures/upload"), signatures, "keys_signatures")
    add(
        "PUT", client_paths("/sendToDevice/{event_type}/{txn_id}"), send_to_device, "send_to_device"
    )
