"""Shared-secret registration: an operator creates accounts with the config's secret."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from crypto.shared_secret import registration_mac
from crypto.tokens import mint_opaque_id
from homeserver.errors import Codes, MatrixError, forbidden
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import optional, parse_json_object, require

if TYPE_CHECKING:
    from homeserver.server import HomeServer

NONCE_TTL_MS = 60_000


def register(hs: HomeServer, router: Router) -> None:
    nonces: dict[str, int] = {}

    def secret() -> str:
        value = hs.config.registration.shared_secret
        if not value:
            raise MatrixError(400, Codes.UNKNOWN, "Shared secret registration is not enabled")
        return value

    def expire_nonces() -> None:
        cutoff = hs.clock.time_msec() - NONCE_TTL_MS
        for nonce in [n for n, ts in nonces.items() if ts < cutoff]:
            del nonces[nonce]

    async def get_nonce(request: MatrixRequest) -> tuple[int, Any]:
        secret()
        hs.ratelimiter.check("admin_register", hs.auth.client_address(request))
        expire_nonces()
        nonce = mint_opaque_id()
        nonces[nonce] = hs.clock.time_msec()
        return 200, {"nonce": nonce}

    async def post_register(request: MatrixRequest) -> tuple[int, Any]:
        key = secret()
        hs.ratelimiter.check("admin_register", hs.auth.client_address(request))
        body = parse_json_object(request)
        nonce = require(body, "nonce", str)
        username = require(body, "username", str)
        password = require(body, "password", str)
        admin = optional(body, "admin", bool, False)
        user_type = optional(body, "user_type", str)
        got_mac = require(body, "mac", str)
        displayname = optional(body, "displayname", str)

        expire_nonces()
        if nonces.pop(nonce, None) is None:
            raise MatrixError(400, Codes.UNKNOWN, "Unrecognised or expired nonce")
        want_mac = registration_mac(key, nonce, username, password, admin, user_type)
        if not hmac.compare_digest(want_mac.encode(), got_mac.encode()):
            raise forbidden("HMAC incorrect")

        hs.accounts.validate_new_password(password)
        user_id = await hs.accounts.create_account(
            username.lower(), password, admin=admin, displayname=displayname
        )
        session = await hs.devices.start_session(user_id, None, None)
        return 200, {
            "user_id": user_id,
            "access_token": session.access_token,
            "device_id": session.device_id,
            "home_server": hs.config.server_name,
        }

    router.add("GET", "/_synapse/admin/v1/register", get_nonce, "admin_register_nonce")
    router.add("POST", "/_synapse/admin/v1/register", post_register, "admin_register")
