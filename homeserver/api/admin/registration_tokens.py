"""Admin management of registration tokens (Synapse's /registration_tokens API)."""

from __future__ import annotations

import secrets
import string
from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, invalid_param, not_found
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import optional, parse_json_object, query_string
from homeserver.storage.users import RegistrationToken

if TYPE_CHECKING:
    from homeserver.server import HomeServer

_TOKEN_ALPHABET = string.ascii_letters + string.digits + "._~-"
_PREFIX = "/_synapse/admin/v1/registration_tokens"


def token_json(token: RegistrationToken) -> dict[str, Any]:
    return {
        "token": token.token,
        "uses_allowed": token.uses_allowed,
        "pending": token.pending,
        "completed": token.completed,
        "expiry_time": token.expiry_time,
    }


def _usable(token: RegistrationToken, now_ms: int) -> bool:
    """Whether the token can still start a registration (Synapse's `valid`)."""
    used = token.pending + token.completed
    within_uses = token.uses_allowed is None or used < token.uses_allowed
    return within_uses and (token.expiry_time is None or token.expiry_time > now_ms)


def register(hs: HomeServer, router: Router) -> None:
    store = hs.stores.users

    async def list_tokens(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        valid = query_string(request, "valid", None, ("true", "false"))
        tokens = await store.get_registration_tokens()
        if valid is not None:
            now = hs.clock.time_msec()
            tokens = [t for t in tokens if _usable(t, now) == (valid == "true")]
        return 200, {"registration_tokens": [token_json(t) for t in tokens]}

    async def new_token(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        body = parse_json_object(request, allow_empty=True)
        token = optional(body, "token", str)
        length = optional(body, "length", int, 16)
        uses_allowed = optional(body, "uses_allowed", int)
        expiry_time = optional(body, "expiry_time", int)
        if token is None:
            if not 0 < length <= 64:
                raise invalid_param("length must be between 1 and 64")
            token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))
        elif not token or len(token) > 64 or any(c not in _TOKEN_ALPHABET for c in token):
            raise invalid_param("token must be 1-64 characters of A-Z, a-z, 0-9, . _ ~ -")
        check_limits(uses_allowed, expiry_time)
        record = RegistrationToken(token, uses_allowed, 0, 0, expiry_time)
        if not await store.create_registration_token(record):
            raise MatrixError(400, Codes.INVALID_PARAM, "Token already exists")
        return 200, token_json(record)

    def check_limits(uses_allowed: int | None, expiry_time: int | None) -> None:
        if uses_allowed is not None and uses_allowed < 0:
            raise invalid_param("uses_allowed must be a non-negative integer")
        if expiry_time is not None and expiry_time < hs.clock.time_msec():
            raise invalid_param("expiry_time must not be in the past")

    async def update_token(request: MatrixRequest, token: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        body = parse_json_object(request, allow_empty=True)
        changes: dict[str, int | None] = {}
        for key in ("uses_allowed", "expiry_time"):
            if key in body:
                value = body[key]
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                    raise invalid_param(f"{key} must be an integer or null")
                changes[key] = value
        check_limits(changes.get("uses_allowed"), changes.get("expiry_time"))
        if not await store.update_registration_token(token, changes):
            raise not_found("No such registration token")
        return 200, token_json((await store.get_registration_tokens(token))[0])

    async def get_token(request: MatrixRequest, token: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        found = await store.get_registration_tokens(token)
        if not found:
            raise not_found("No such registration token")
        return 200, token_json(found[0])

    async def delete_token(request: MatrixRequest, token: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        if not await store.delete_registration_token(token):
            raise not_found("No such registration token")
        return 200, {}

    router.add("GET", _PREFIX, list_tokens, "admin_registration_tokens")
    router.add("POST", _PREFIX + "/new", new_token, "admin_registration_tokens")
    router.add("GET", _PREFIX + "/{token}", get_token, "admin_registration_token")
    router.add("PUT", _PREFIX + "/{token}", update_token, "admin_registration_token")
    router.add("DELETE", _PREFIX + "/{token}", delete_token, "admin_registration_token")
