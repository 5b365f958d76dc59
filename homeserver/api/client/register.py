"""Registration: /register with user-interactive auth, and username availability."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, forbidden
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import (
    client_paths,
    client_v1_paths,
    optional,
    parse_json_object,
    query_required,
    query_string,
    require,
)
from homeserver.services.uia import DUMMY, EMAIL_IDENTITY, REGISTRATION_TOKEN, TERMS

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(hs: HomeServer, router: Router) -> None:
    config = hs.config.registration

    def flows() -> list[list[str]]:
        first = REGISTRATION_TOKEN if config.requires_token else DUMMY
        if hs.config.email.enabled and hs.config.email.registration_email:
            # The address is optional: a flow without it, and one with it.
            found = (
                [[first], [first, EMAIL_IDENTITY]]
                if config.requires_token
                else [[first], [EMAIL_IDENTITY]]
            )
        else:
            found = [[first]]
        if hs.consent.enabled:  # every way in goes through accepting the policy
            found = [[s for s in stages if s != DUMMY] + [TERMS] for stages in found]
        return found

    async def get_flows(request: MatrixRequest) -> tuple[int, Any]:
        return 200, {"flows": [{"stages": s} for s in flows()], "params": hs.uia.params(flows())}

    async def post_register(request: MatrixRequest) -> tuple[int, Any]:
        kind = query_string(request, "kind", "user")
        if kind == "guest":
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest access is disabled")
        if kind != "user":
            raise MatrixError(400, Codes.INVALID_PARAM, "kind must be 'user' or 'guest'")
        if not config.enabled:
            raise forbidden("Registration has been disabled")
        # Look at the bucket on every step of the flow, but take from it only once an
        # account is actually created: the UIA round trips are one registration.
        address = hs.auth.client_address(request)
        hs.ratelimiter.check("registration", address, consume=False)
        body = parse_json_object(request, allow_empty=True)

        username = optional(body, "username", str)
        localpart = username.lower() if username is not None else None
        if localpart is not None and not await hs.accounts.is_available(localpart):
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.")
        # Clients may ask for the flows before sending a password: check it if present, and
        # insist on it only once authentication is done.
        password = body.get("password")
        if password is not None:
            hs.accounts.validate_new_password(password)
        device_id = optional(body, "device_id", str)
        display_name = hs.devices.check_display_name(body.get("initial_device_display_name"))
        inhibit_login = optional(body, "inhibit_login", bool, False)

        results = await hs.uia.authenticate(body, flows(), "register")
        password = hs.accounts.validate_new_password(require(body, "password", str))
        token = results.get(REGISTRATION_TOKEN)
        if token is not None:
            await hs.accounts.consume_registration_token(token)
        user_id = await hs.accounts.create_account(localpart, password)
        accepted = results.get(TERMS)
        if accepted is not None:
            await hs.consent.record(user_id, accepted)
        email_session = results.get(EMAIL_IDENTITY)
        if email_session is not None:
            await hs.threepids.add_to_account(user_id, email_session)
        hs.ratelimiter.take("registration", address)

        response: dict[str, Any] = {"user_id": user_id, "home_server": hs.config.server_name}
        if not inhibit_login:
            refreshable = optional(body, "refresh_token", bool, False)
            session = await hs.devices.start_session(user_id, device_id, display_name, refreshable)
            response.update(session.login_fields())
        return 200, response

    async def available(request: MatrixRequest) -> tuple[int, Any]:
        hs.ratelimiter.check("registration", hs.auth.client_address(request), consume=False)
        username = query_required(request, "username").lower()
        if not await hs.accounts.is_available(username):
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.")
        return 200, {"available": True}

    async def token_validity(request: MatrixRequest) -> tuple[int, Any]:
        if not (config.enabled and config.requires_token):
            raise forbidden("This server does not accept registration tokens")
        hs.ratelimiter.check("registration", hs.auth.client_address(request))
        token = query_required(request, "token")
        return 200, {"valid": await hs.accounts.registration_token_is_valid(token)}

    router.add("GET", client_paths("/register"), get_flows, "register_flows")
    router.add("POST", client_paths("/register"), post_register, "register")
    router.add("GET", client_paths("/register/available"), available, "register_available")
    router.add(
        "GET",
        client_v1_paths("/register/m.login.registration_token/validity"),
        token_validity,
        "registration_token_validity",
    )
