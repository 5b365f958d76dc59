"""E-mail addresses on accounts: proving one is yours by a link we mail, adding it to the
account, signing in or resetting a password with it. Only e-mail: phone numbers are not
supported. The address is personal data: only its owner ever sees it."""

from __future__ import annotations

import logging
import re
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from crypto.tokens import hash_token, mint_opaque_id
from homeserver.errors import Codes, MatrixError, bad_json, invalid_param
from homeserver.services.mailer import Mailer
from homeserver.storage.threepids import ThreepidStore, Validation

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
EMAIL = "email"
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_CLIENT_SECRET_RE = re.compile(r"^[0-9a-zA-Z.=_\-]{1,255}$")
VALIDATE_PATH = "/_matrix/client/unstable/homeserver/email/validate"

PURPOSES = {
    "register": "Confirm your e-mail address to finish creating your account",
    "add": "Confirm the e-mail address for your account",
    "password": "Reset your password",
}


def normalise_email(address: str) -> str:
    """Case-folded (addresses compare without case in practice) and trimmed."""
    address = address.strip().lower()
    if not _EMAIL_RE.match(address):
        raise invalid_param("Not an e-mail address")
    return address


class ThreepidService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config = hs.config.email
        self.store = ThreepidStore(hs.db)
        self.mailer = Mailer(hs.reactor, self.config)

    def require_enabled(self) -> None:
        if not self.config.enabled:
            raise MatrixError(
                400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "E-mail is not configured on this server"
            )

    async def request_token(self, purpose: str, body: JsonDict) -> JsonDict:
        """Mail a validation link for ``purpose``; a repeat with the same client secret and
        send_attempt sends nothing new (the spec's idempotence)."""
        self.require_enabled()
        client_secret, address = body.get("client_secret"), body.get("email")
        send_attempt = body.get("send_attempt")
        if not isinstance(client_secret, str) or not _CLIENT_SECRET_RE.match(client_secret):
            raise bad_json("client_secret must be 1-255 characters of [0-9a-zA-Z.=_-]")
        if not isinstance(address, str):
            raise bad_json("email must be a string")
        if not isinstance(send_attempt, int) or isinstance(send_attempt, bool):
            raise bad_json("send_attempt must be an integer")
        address = normalise_email(address)
        owner = await self.store.owner(EMAIL, address)
        if purpose in ("register", "add") and owner is not None:
            raise MatrixError(400, "M_THREEPID_IN_USE", "This e-mail address is already in use")
        if purpose == "password" and owner is None:
            raise MatrixError(400, "M_THREEPID_NOT_FOUND", "No account has this e-mail address")
        now = self.hs.clock.time_msec()
        existing = await self.store.find_session(client_secret, address, purpose)
        if existing is not None and existing.send_attempt >= send_attempt:
            return {"sid": existing.sid}
        sid = existing.sid if existing is not None else mint_opaque_id()
        token = secrets.token_urlsafe(24)
        session = Validation(
            sid, client_secret, EMAIL, address, purpose, hash_token(token), send_attempt, None,
            now + int(self.config.validation_token_lifetime),
        )  # fmt: skip
        await self.store.save_session(session)
        link = self._link(sid, client_secret, token)
        text = (
            f"{PURPOSES[purpose]} on {self.hs.config.server_name} by opening this link:\n\n"
            f"{link}\n\nIf you did not ask for this, you can ignore this message.\n"
        )
        try:
            await self.mailer.send(address, PURPOSES[purpose], text)
        except Exception as e:
            logger.warning("Sending a validation mail failed: %s", e)
            raise MatrixError(500, Codes.UNKNOWN, "The e-mail could not be sent") from None
        return {"sid": sid}

    def _link(self, sid: str, client_secret: str, token: str) -> str:
        base = self.hs.config.public_baseurl or f"https://{self.hs.config.server_name}/"
        query = urlencode({"sid": sid, "client_secret": client_secret, "token": token})
        return base.rstrip("/") + VALIDATE_PATH + "?" + query

    async def validate(self, sid: str, client_secret: str, token: str) -> bool:
        """The link in the mail was opened: the address is proven, if all matches."""
        session = await self.store.get_session(sid)
        now = self.hs.clock.time_msec()
        if (
            session is None
            or session.client_secret != client_secret
            or session.expires_ts < now
            or not secrets.compare_digest(session.token_hash, hash_token(token))
        ):
            return False
        if session.validated_ts is None:
            await self.store.mark_validated(sid, now)
        return True

    async def validated(self, creds: Any, purpose: str) -> Validation:
        """A proven validation session from ``threepid_creds`` ({sid, client_secret})."""
        if not isinstance(creds, dict):
            raise bad_json("threepid_creds must be an object")
        sid, client_secret = creds.get("sid"), creds.get("client_secret")
        session = await self.store.get_session(sid) if isinstance(sid, str) else None
        if (
            session is None
            or session.client_secret != client_secret
            or session.purpose != purpose
            or session.validated_ts is None
        ):
            raise MatrixError(401, "M_THREEPID_AUTH_FAILED", "The e-mail address is not validated")
        return session

    async def add_to_account(self, user_id: str, session: Validation) -> None:
        assert session.validated_ts is not None
        if not await self.store.add(
            user_id, session.medium, session.address, session.validated_ts,
            self.hs.clock.time_msec(),
        ):  # fmt: skip
            raise MatrixError(400, "M_THREEPID_IN_USE", "This e-mail address is already in use")
        await self.store.delete_session(session.sid)

    async def replace_for_user(self, user_id: str, threepids: list[tuple[str, str]]) -> None:
        """Set the user's addresses to exactly these (an admin vouches for them: no
        validation mail)."""
        now = self.hs.clock.time_msec()
        addresses = await self.check_replacement(user_id, threepids)
        await self.store.remove_all(user_id)
        for address in dict.fromkeys(addresses):
            await self.store.add(user_id, EMAIL, address, now, now)

    async def check_replacement(self, user_id: str, threepids: list[tuple[str, str]]) -> list[str]:
        """The normalised addresses, or the error replacing the user's with them would meet:
        only e-mail is supported, and an address another user holds is refused."""
        addresses = []
        for medium, address in threepids:
            if medium != EMAIL:
                raise MatrixError(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED",
                                  "Only e-mail addresses are supported")  # fmt: skip
            addresses.append(normalise_email(address))
        for address in addresses:
            owner = await self.store.owner(EMAIL, address)
            if owner is not None and owner != user_id:
                raise MatrixError(400, "M_THREEPID_IN_USE", f"{address} is in use")
        return addresses

    async def list(self, user_id: str) -> list[JsonDict]:
        return [
            {"medium": m, "address": a, "validated_at": v, "added_at": t}
            for m, a, v, t in await self.store.list_for_user(user_id)
        ]

    async def user_for_email(self, address: str) -> str | None:
        try:
            return await self.store.owner(EMAIL, normalise_email(address))
        except MatrixError:
            return None
