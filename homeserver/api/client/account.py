"""The account itself: whoami, password change, deactivation, whois, OpenID tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import forbidden
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import client_paths, optional, parse_json_object, require
from homeserver.services.uia import PASSWORD

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(hs: HomeServer, router: Router) -> None:
    async def whoami(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, {
            "user_id": requester.user_id,
            "device_id": requester.device_id,
            "is_guest": False,
        }

    async def change_password(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        new_password = hs.accounts.validate_new_password(require(body, "new_password", str))
        logout_devices = optional(body, "logout_devices", bool, True)
        await hs.uia.authenticate(body, [[PASSWORD]], "change_password", requester)
        await hs.accounts.change_password(requester.user_id, new_password)
        if logout_devices:
            await hs.devices.delete_all_devices(requester.user_id, requester.device_id)
        return 200, {}

    async def deactivate(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request, allow_empty=True)
        erase = optional(body, "erase", bool, False)
        await hs.uia.authenticate(body, [[PASSWORD]], "deactivate", requester)
        await hs.accounts.deactivate(requester.user_id, erase)
        return 200, {"id_server_unbind_result": "no-support"}

    async def whois(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if requester.user_id != user_id:
            await hs.auth.require_admin(request)
        devices: dict[str, Any] = {}
        for device_id, ip, user_agent, last_seen in await hs.stores.devices.get_client_ips(user_id):
            sessions = devices.setdefault(device_id, {"sessions": [{"connections": []}]})
            sessions["sessions"][0]["connections"].append(
                {"ip": ip, "last_seen": last_seen, "user_agent": user_agent}
            )
        return 200, {"user_id": user_id, "devices": devices}

    async def openid_token(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if requester.user_id != user_id:
            raise forbidden("You can only request OpenID tokens for yourself")
        parse_json_object(request, allow_empty=True)
        return 200, await hs.accounts.mint_openid_token(user_id)

    router.add("GET", client_paths("/account/whoami"), whoami, "whoami")
    router.add("POST", client_paths("/user/{user_id}/openid/request_token"), openid_token,
               "openid_request_token")  # fmt: skip
    router.add("POST", client_paths("/account/password"), change_password, "account_password")
    router.add("POST", client_paths("/account/deactivate"), deactivate, "account_deactivate")
    router.add("GET", client_paths("/admin/whois/{user_id}"), whois, "admin_whois")
