"""Logging in and out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import client_paths, optional, parse_json_object, require

if TYPE_CHECKING:
    from homeserver.server import HomeServer

PASSWORD_LOGIN = "m.login.password"
TOKEN_LOGIN = "m.login.token"


def register(hs: HomeServer, router: Router) -> None:
    tokens_enabled = hs.config.sessions.login_token_enabled

    async def get_flows(request: MatrixRequest) -> tuple[int, Any]:
        flows: list[dict[str, Any]] = [{"type": PASSWORD_LOGIN}]
        if tokens_enabled:
            flows.append({"type": TOKEN_LOGIN, "get_login_token": True})
        return 200, {"flows": flows}

    async def login(request: MatrixRequest) -> tuple[int, Any]:
        hs.ratelimiter.check("login_address", hs.auth.client_address(request))
        body = parse_json_object(request)
        login_type = body.get("type")
        if login_type == TOKEN_LOGIN and tokens_enabled:
            user_id = await hs.accounts.login_with_token(body)
        elif login_type == PASSWORD_LOGIN:
            user_id = await hs.accounts.login_with_password(body)
        else:
            raise MatrixError(400, Codes.UNKNOWN, f"Unknown login type {login_type!r}")
        device_id = optional(body, "device_id", str)
        display_name = hs.devices.check_display_name(body.get("initial_device_display_name"))
        refreshable = optional(body, "refresh_token", bool, False)
        session = await hs.devices.start_session(user_id, device_id, display_name, refreshable)
        response: dict[str, Any] = {
            "user_id": session.user_id,
            "home_server": hs.config.server_name,
            **session.login_fields(),
        }
        # Clients switch to this URL: only advertise one the operator has configured.
        if hs.config.public_baseurl is not None:
            response["well_known"] = {"m.homeserver": {"base_url": hs.config.public_baseurl}}
        return 200, response

    async def logout(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await hs.devices.delete_devices(requester.user_id, [requester.device_id])
        return 200, {}

    async def logout_all(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await hs.devices.delete_all_devices(requester.user_id)
        return 200, {}

    async def refresh(request: MatrixRequest) -> tuple[int, Any]:
        body = parse_json_object(request)
        access, refresh_token, lifetime = await hs.auth.refresh(require(body, "refresh_token", str))
        return 200, {
            "access_token": access,
            "refresh_token": refresh_token,
            "expires_in_ms": lifetime,
        }

    async def get_login_token(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if not tokens_enabled:
            raise MatrixError(404, Codes.UNRECOGNIZED, "Login tokens are not enabled here")
        body = parse_json_object(request, allow_empty=True)
        await hs.uia.authenticate(body, [["m.login.password"]], "get_login_token", requester)
        token, lifetime = await hs.accounts.mint_login_token(requester.user_id)
        return 200, {"login_token": token, "expires_in_ms": lifetime}

    router.add("POST", "/_matrix/client/v1/login/get_token", get_login_token, "login_get_token")
    router.add("POST", client_paths("/refresh", ("/_matrix/client/v3", "/_matrix/client/v1")),
               refresh, "refresh")  # fmt: skip
    router.add("GET", client_paths("/login"), get_flows, "login_flows")
    router.add("POST", client_paths("/login"), login, "login")
    router.add("POST", client_paths("/logout"), logout, "logout")
    router.add("POST", client_paths("/logout/all"), logout_all, "logout_all")
