"""Who is making a request: access tokens in, a ``Requester`` out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cachetools import LRUCache

from crypto.tokens import hash_token, mint_access_token
from homeserver.caches import MeasuredLRU
from homeserver.errors import Codes, MatrixError
from homeserver.http.server import MatrixRequest
from homeserver.storage.devices import TokenOwner

if TYPE_CHECKING:
    from homeserver.server import HomeServer


@dataclass(frozen=True)
class Requester:
    user_id: str
    device_id: str
    token_hash: str
    # Set by an admin: may read but not act / acts only for themselves.
    suspended: bool = False
    shadow_banned: bool = False


class AuthService:
    def __init__(self, hs: HomeServer) -> None:
        self.devices = hs.stores.devices
        self.users = hs.stores.users
        self.client_ips = hs.client_ips
        self.address_resolver = hs.address_resolver
        self.clock = hs.clock
        # token hash -> its owner; revocation removes entries immediately.
        self._token_cache: LRUCache[str, TokenOwner] = MeasuredLRU("access_tokens")
        self.hs = hs

    @staticmethod
    def extract_token(request: MatrixRequest) -> str | None:
        header = request.header("Authorization")
        query = request.query_arg("access_token")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise MatrixError(
                    401, Codes.MISSING_TOKEN, "Authorization header must be 'Bearer <token>'"
                )
            if query is not None and query != token.strip():
                raise MatrixError(400, Codes.INVALID_PARAM, "Two different access tokens given")
            return token.strip()
        return query

    def client_address(self, request: MatrixRequest) -> str:
        if not request.client_ip:
            peer = request.getClientAddress()
            request.client_ip = self.address_resolver.resolve(
                getattr(peer, "host", "unknown"), request.header("X-Forwarded-For")
            )
        return request.client_ip

    async def get_user_by_req(self, request: MatrixRequest) -> Requester:
        token = self.extract_token(request)
        if token is None:
            raise MatrixError(401, Codes.MISSING_TOKEN, "Missing access token")
        requester = await self._requester_for_token(token)
        if requester is None:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unknown access token", soft_logout=False)
        if requester is _EXPIRED:
            # The client refreshes and carries on: its session is not over.
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Access token expired", soft_logout=True)
        if requester is _LOCKED:
            raise MatrixError(401, "M_USER_LOCKED", "This account has been locked",
                              soft_logout=True)  # fmt: skip
        request.requester_id = requester.user_id
        self.client_ips.record(
            requester.user_id,
            requester.device_id,
            self.client_address(request),
            request.header("User-Agent") or "",
        )
        return requester

    async def get_optional_user(self, request: MatrixRequest) -> Requester | None:
        if self.extract_token(request) is None:
            return None
        return await self.get_user_by_req(request)

    async def _requester_for_token(self, token: str) -> Requester | None:
        token_hash = hash_token(token)
        owner = self._token_cache.get(token_hash)
        if owner is None:
            owner = await self.devices.get_token_owner(token_hash)
            if owner is None:
                return None
            self._token_cache[token_hash] = owner
        if owner.expires_ts is not None and self.clock.time_msec() >= owner.expires_ts:
            return _EXPIRED
        if owner.minted_by is not None:
            # First use of a refreshed pair: the refresh token it replaced is done.
            await self.devices.retire_refresh_token(owner.minted_by)
            owner = replace(owner, minted_by=None)
            self._token_cache[token_hash] = owner
        if owner.locked:
            return _LOCKED
        return Requester(
            owner.user_id, owner.device_id, token_hash, owner.suspended, owner.shadow_banned
        )

    def account_state_changed(self) -> None:
        """An admin locked, suspended or shadow-banned someone: forget every cached owner
        (rare enough that precision is not worth a per-user index)."""
        self._token_cache.clear()

    async def issue_token(self, user_id: str, device_id: str) -> str:
        token = mint_access_token()
        await self.devices.add_access_token(
            hash_token(token), user_id, device_id, self.clock.time_msec()
        )
        return token

    async def issue_refreshable(
        self, user_id: str, device_id: str, exchanged: str | None = None
    ) -> tuple[str, str, int]:
        """(access token, refresh token, access lifetime in ms) for a client that asked for
        refresh tokens; ``exchanged`` is the refresh token hash this pair replaces."""
        sessions = self.hs.config.sessions
        now = self.clock.time_msec()
        access, refresh = mint_access_token(), mint_access_token("syr")
        refresh_lifetime = sessions.refresh_lifetime_ms
        await self.devices.add_session_tokens(
            user_id, device_id, hash_token(access), now + sessions.access_lifetime_ms,
            hash_token(refresh), now + refresh_lifetime if refresh_lifetime else None, now,
            exchanged,
        )  # fmt: skip
        return access, refresh, sessions.access_lifetime_ms

    async def refresh(self, refresh_token: str) -> tuple[str, str, int]:
        """Exchange a refresh token for a new pair. It stays usable until that pair is used
        (a client whose answer was lost asks again), then never again."""
        token_hash = hash_token(refresh_token)
        record = await self.devices.get_refresh_token(token_hash)
        if record is None or (
            record.expires_ts is not None and self.clock.time_msec() >= record.expires_ts
        ):
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unknown or expired refresh token",
                              soft_logout=True)  # fmt: skip
        if record.minted_by is not None:
            await self.devices.retire_refresh_token(record.minted_by)
        return await self.issue_refreshable(record.user_id, record.device_id, token_hash)

    def forget_tokens(self, token_hashes: list[str]) -> None:
        for token_hash in token_hashes:
            self._token_cache.pop(token_hash, None)

    async def require_admin(self, request: MatrixRequest) -> Requester:
        requester = await self.get_user_by_req(request)
        user = await self.users.get_user(requester.user_id)
        if user is None or not user.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
        return requester


# What _requester_for_token answers for an access token past its lifetime.
_EXPIRED = Requester("", "", "expired")
_LOCKED = Requester("", "", "locked")
