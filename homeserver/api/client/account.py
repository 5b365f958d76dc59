"""The account itself: whoami, password change, deactivation, whois, OpenID tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, forbidden
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import client_paths, optional, parse_json_object, require
from homeserver.services.threepids import EMAIL, VALIDATE_PATH, normalise_email
from homeserver.services.uia import EMAIL_IDENTITY, PASSWORD

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
        requester = await hs.auth.get_optional_user(request)
        body = parse_json_object(request)
        new_password = hs.accounts.validate_new_password(require(body, "new_password", str))
        logout_devices = optional(body, "logout_devices", bool, True)
        if requester is None:
            # A forgotten password: the e-mail address on the account proves who it is.
            if not hs.config.email.enabled:
                await hs.auth.get_user_by_req(request)  # the usual 401
            results = await hs.uia.authenticate(body, [[EMAIL_IDENTITY]], "reset_password")
            session = results[EMAIL_IDENTITY]
            user_id = await hs.threepids.store.owner(session.medium, session.address)
            if user_id is None:
                raise MatrixError(400, "M_THREEPID_NOT_FOUND", "No account has this address")
            await hs.accounts.change_password(user_id, new_password)
            await hs.threepids.store.delete_session(session.sid)
            if logout_devices:
                await hs.devices.delete_all_devices(user_id)
            return 200, {}
        await hs.uia.authenticate(body, [[PASSWORD]], "change_password", requester)
        await hs.accounts.change_password(requester.user_id, new_password)
        if logout_devices:
            await hs.devices.delete_all_devices(requester.user_id, requester.device_id)
        return 200, {}

    def request_token(purpose: str) -> Any:
        async def handler(request: MatrixRequest) -> tuple[int, Any]:
            return 200, await hs.threepids.request_token(purpose, parse_json_object(request))

        return handler

    async def validate_email(request: MatrixRequest) -> tuple[int, Any]:
        ok = await hs.threepids.validate(
            request.query_arg("sid") or "", request.query_arg("client_secret") or "",
            request.query_arg("token") or "",
        )  # fmt: skip
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy", b"default-src 'none'")
        text = (
            "Your e-mail address is confirmed. You can go back to your Matrix app."
            if ok
            else "This link is not valid (any more). Ask your Matrix app for a new one."
        )
        page = f"<!doctype html><html><body><p>{text}</p></body></html>".encode()
        return (200 if ok else 400), page

    async def list_threepids(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, {"threepids": await hs.threepids.list(requester.user_id)}

    async def add_threepid(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        creds = {
            "sid": require(body, "sid", str),
            "client_secret": require(body, "client_secret", str),
        }
        await hs.uia.authenticate(body, [[PASSWORD]], "add_threepid", requester)
        session = await hs.threepids.validated(creds, "add")
        await hs.threepids.add_to_account(requester.user_id, session)
        return 200, {}

    async def delete_threepid(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        medium, address = require(body, "medium", str), require(body, "address", str)
        if medium == EMAIL:
            address = normalise_email(address)
        if not await hs.threepids.store.remove(requester.user_id, medium, address):
            raise MatrixError(404, Codes.NOT_FOUND, "No such address on your account")
        return 200, {"id_server_unbind_result": "no-support"}

    async def unbind_threepid(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.get_user_by_req(request)
        parse_json_object(request)
        return 200, {"id_server_unbind_result": "no-support"}

    async def bind_threepid(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.get_user_by_req(request)
        raise MatrixError(
            400, "M_SERVER_NOT_TRUSTED", "This server binds no addresses at identity servers"
        )

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
    router.add("POST", client_paths("/register/email/requestToken"), request_token("register"),
               "email_request_token")  # fmt: skip
    router.add("POST", client_paths("/account/3pid/email/requestToken"), request_token("add"),
               "email_request_token")  # fmt: skip
    router.add("POST", client_paths("/account/password/email/requestToken"),
               request_token("password"), "email_request_token")  # fmt: skip
    router.add("GET", VALIDATE_PATH, validate_email, "email_validate")
    router.add("GET", client_paths("/account/3pid"), list_threepids, "threepids")
    router.add("POST", client_paths("/account/3pid/add"), add_threepid, "threepid_add")
    router.add("POST", client_paths("/account/3pid/delete"), delete_threepid, "threepid_delete")
    router.add("POST", client_paths("/account/3pid/unbind"), unbind_threepid, "threepid_unbind")
    router.add("POST", client_paths("/account/3pid/bind"), bind_threepid, "threepid_bind")
    router.add("POST", client_paths("/user/{user_id}/openid/request_token"), openid_token,
               "openid_request_token")  # fmt: skip
    router.add("POST", client_paths("/account/password"), change_password, "account_password")
    router.add("POST", client_paths("/account/deactivate"), deactivate, "account_deactivate")
    router.add("GET", client_paths("/admin/whois/{user_id}"), whois, "admin_whois")
