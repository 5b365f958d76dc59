"""Accounts: registration, passwords, login, deactivation and erasure."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import threads

from crypto.passwords import check_password, hash_password
from crypto.tokens import hash_token, mint_opaque_id
from homeserver.errors import Codes, MatrixError, forbidden, invalid_param
from homeserver.storage.users import UserExistsError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

_LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")
MAX_USER_ID_LENGTH = 255
MAX_PASSWORD_LENGTH = 512
OPENID_TOKEN_LIFETIME_MS = 3_600_000


@dataclass(frozen=True)
class Session:
    user_id: str
    device_id: str
    access_token: str
    # Only for clients that asked for refresh tokens: their access tokens expire.
    refresh_token: str | None = None
    expires_in_ms: int | None = None

    def login_fields(self) -> dict[str, Any]:
        """The token fields of a /login or /register answer."""
        fields: dict[str, Any] = {"access_token": self.access_token, "device_id": self.device_id}
        if self.refresh_token is not None:
            fields["refresh_token"] = self.refresh_token
            fields["expires_in_ms"] = self.expires_in_ms
        return fields


class AccountService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.server_name = hs.config.server_name
        self.users = hs.stores.users
        self.clock = hs.clock
        self.hashing = hs.config.password_hashing
        self.registration = hs.config.registration
        # A hash to check against when the user does not exist, so that timing does not
        # reveal which accounts exist.
        self._dummy_hash: str | None = None

    # Identifiers

    def user_id_for(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name) and user_id.startswith("@")

    def validate_localpart(self, localpart: str) -> None:
        if not localpart or not _LOCALPART_RE.match(localpart):
            raise MatrixError(
                400,
                Codes.INVALID_USERNAME,
                "User ID may only contain a-z, 0-9, and the characters . _ = - / +",
            )
        if len(self.user_id_for(localpart)) > MAX_USER_ID_LENGTH:
            raise MatrixError(400, Codes.INVALID_USERNAME, "User ID is too long")

    def user_id_from_identifier(self, body: dict[str, Any]) -> str | None:
        """The user a login or UIA body names (``identifier`` m.id.user, or legacy ``user``)."""
        identifier = body.get("identifier")
        if identifier is not None:
            if not isinstance(identifier, dict):
                raise MatrixError(400, Codes.BAD_JSON, "'identifier' must be an object")
            if identifier.get("type") != "m.id.user":
                raise MatrixError(
                    400, Codes.UNKNOWN, "Only the m.id.user identifier type is supported"
                )
            user = identifier.get("user")
        else:
            user = body.get("user")
            if user is None:
                return None
        if not isinstance(user, str) or not user:
            raise MatrixError(400, Codes.BAD_JSON, "'identifier.user' must be a non-empty string")
        if user.startswith("@"):
            localpart, _, server = user[1:].partition(":")
            if server != self.server_name:
                raise MatrixError(403, Codes.FORBIDDEN, "That user is not on this server")
            return self.user_id_for(localpart.lower())
        return self.user_id_for(user.lower())

    # Passwords (hashing runs in a thread: it is slow by design)

    def validate_new_password(self, password: Any) -> str:
        if not isinstance(password, str):
            raise MatrixError(400, Codes.BAD_JSON, "Password must be a string")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise invalid_param(f"Password is longer than {MAX_PASSWORD_LENGTH} characters")
        if len(password) < self.registration.password_min_length:
            raise MatrixError(
                400,
                Codes.WEAK_PASSWORD,
                f"Password must be at least {self.registration.password_min_length} characters",
            )
        return password

    async def hash_password(self, password: str) -> str:
        result: str = await threads.deferToThread(
            hash_password, password, self.hashing.bcrypt_rounds, self.hashing.pepper
        )
        return result

    async def check_password(self, user_id: str, password: str) -> bool:
        if len(password) > MAX_PASSWORD_LENGTH:
            return False
        user = await self.users.get_user(user_id)
        stored = user.password_hash if user and not user.deactivated else None
        if stored is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self.hash_password(secrets.token_hex(16))
            stored = self._dummy_hash
            await threads.deferToThread(check_password, password, stored, self.hashing.pepper)
            return False
        ok: bool = await threads.deferToThread(
            check_password, password, stored, self.hashing.pepper
        )
        return ok

    # Registration

    async def registration_token_is_valid(self, token: str) -> bool:
        found = await self.users.get_registration_tokens(token)
        if not found:
            return False
        record = found[0]
        if record.expiry_time is not None and record.expiry_time <= self.clock.time_msec():
            return False
        return record.uses_allowed is None or record.completed < record.uses_allowed

    async def is_available(self, localpart: str) -> bool:
        self.validate_localpart(localpart)
        return not await self.users.find_user_case_insensitive(self.user_id_for(localpart))

    async def create_account(
        self,
        localpart: str | None,
        password: str | None,
        admin: bool = False,
        displayname: str | None = None,
    ) -> str:
        """Create the account (no device yet). ``localpart=None`` picks a free numeric one.
        Without a ``displayname`` the localpart becomes the display name (unless the config
        says not to), so that other people see a name rather than a bare user ID."""
        password_hash = await self.hash_password(password) if password is not None else None
        now = self.clock.time_msec()
        if localpart is None:
            for _ in range(10):
                candidate = self.user_id_for(str(secrets.randbelow(10**9) + 10**8))
                try:
                    await self.users.create_user(candidate, password_hash, now, admin)
                except UserExistsError:
                    continue
                user_id = candidate
                break
            else:
                raise MatrixError(500, Codes.UNKNOWN, "Could not pick a free user ID")
        else:
            self.validate_localpart(localpart)
            user_id = self.user_id_for(localpart)
            try:
                await self.users.create_user(user_id, password_hash, now, admin)
            except UserExistsError:
                raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.") from None
        if not displayname and self.hs.config.registration.localpart_as_displayname:
            displayname = user_id[1:].split(":", 1)[0]
        if displayname:
            await self.hs.stores.profiles.set_field(user_id, "displayname", displayname)
        logger.info("Registered %s", user_id)
        return user_id

    async def consume_registration_token(self, token: str) -> None:
        if not await self.users.use_registration_token(token, self.clock.time_msec()):
            raise MatrixError(401, Codes.FORBIDDEN, "Registration token is no longer valid")

    # OpenID (third parties checking who a user is)

    async def mint_openid_token(self, user_id: str) -> dict[str, Any]:
        token = mint_opaque_id(32)
        expires_ts = self.clock.time_msec() + OPENID_TOKEN_LIFETIME_MS
        await self.users.add_openid_token(hash_token(token), user_id, expires_ts)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "matrix_server_name": self.server_name,
            "expires_in": OPENID_TOKEN_LIFETIME_MS // 1000,
        }

    async def openid_user(self, token: str) -> str | None:
        return await self.users.get_openid_user(hash_token(token), self.clock.time_msec())

    # Login tokens

    async def mint_login_token(self, user_id: str) -> tuple[str, int]:
        lifetime = int(self.hs.config.sessions.login_token_lifetime)
        token = mint_opaque_id(32)
        await self.users.add_login_token(
            hash_token(token), user_id, self.clock.time_msec() + lifetime
        )
        return token, lifetime

    async def login_with_token(self, body: dict[str, Any]) -> str:
        token = body.get("token")
        if not isinstance(token, str):
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'token'")
        user_id = await self.users.take_login_token(hash_token(token), self.clock.time_msec())
        if user_id is None:
            raise forbidden("Invalid or expired login token")
        user = await self.users.get_user(user_id)
        if user is None or user.deactivated:
            raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
        return user_id

    # Login

    async def login_with_password(self, body: dict[str, Any]) -> str:
        """Check a m.login.password body; returns the user ID it proves."""
        identifier = body.get("identifier")
        if isinstance(identifier, dict) and identifier.get("type") == "m.id.thirdparty":
            address = identifier.get("address")
            if identifier.get("medium") != "email" or not isinstance(address, str):
                raise MatrixError(400, Codes.UNKNOWN, "Only e-mail addresses can identify users")
            user_id = await self.hs.threepids.user_for_email(address)
            if user_id is None:
                raise forbidden("Invalid username or password")
        else:
            user_id = self.user_id_from_identifier(body)
        if user_id is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'identifier'")
        password = body.get("password")
        if not isinstance(password, str):
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'password'")
        self.hs.ratelimiter.check("login_account", user_id)
        self.hs.ratelimiter.check("login_failed_attempts", user_id, consume=False)
        if not await self.check_password(user_id, password):
            self.hs.ratelimiter.check("login_failed_attempts", user_id)
            user = await self.users.get_user(user_id)
            if user is not None and user.deactivated:
                raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
            raise forbidden("Invalid username or password")
        return user_id

    # Changes

    async def change_password(self, user_id: str, new_password: str) -> None:
        await self.users.set_password_hash(user_id, await self.hash_password(new_password))

    async def _leave_all_rooms(self, user_id: str) -> None:
        rooms = await self.hs.stores.events.get_rooms_for_user(user_id, ["join", "invite", "knock"])
        for room_id in rooms:
            try:
                await self.hs.room_events.send(
                    room_id, user_id, "m.room.member", {"membership": "leave"}, state_key=user_id
                )
            except MatrixError as e:
                logger.warning("Could not remove %s from %s: %s", user_id, room_id, e)

    async def deactivate(self, user_id: str, erase: bool) -> None:
        """Lock the account for good: no password, no sessions, no profile, no IP records.

        With ``erase`` the account data goes too and the account is marked erased, so
        that its events can be hidden from users who join later.
        """
        addresses = [t["address"] for t in await self.hs.threepids.list(user_id)]
        await self.users.mark_deactivated(user_id, erase)
        await self.hs.devices.delete_all_devices(user_id)
        await self._leave_all_rooms(user_id)
        await self.hs.stores.profiles.delete_profile(user_id)
        await self.hs.threepids.store.remove_all(user_id)
        await self.users.replace_external_ids(user_id, [])
        if erase:
            await self.hs.erasure.erase(user_id, addresses)
        logger.info("Deactivated %s (erase=%s)", user_id, erase)
