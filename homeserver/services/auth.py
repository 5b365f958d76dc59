"""Who is making a request: access tokens in, a ``Requester`` out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cachetools import LRUCache

from crypto.tokens import hash_token, mint_access_token
from homeserver.errors import Codes, MatrixError
from homeserver.http.server import MatrixRequest

if TYPE_CHECKING:
    from homeserver.server import HomeServer


@dataclass(frozen=True)
class Requester:
    user_id: str
    device_id: str
    token_hash: str


class AuthService:
    def __init__(self, hs: HomeServer) -> None:
        self.devices = hs.stores.devices
        self.users = hs.stores.users
        self.client_ips = hs.client_ips
        self.address_resolver = hs.address_resolver
        self.clock = hs.clock
        # token hash -> (user_id, device_id); revocation removes entries immediately.
        self._token_cache: LRUCache[str, tuple[str, str]] = LRUCache(maxsize=50_000)

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
        return Requester(owner[0], owner[1], token_hash)

    async def issue_token(self, user_id: str, device_id: str) -> str:
        token = mint_access_token()
        await self.devices.add_access_token(
            hash_token(token), user_id, device_id, self.clock.time_msec()
        )
        return token

    def forget_tokens(self, token_hashes: list[str]) -> None:
        for token_hash in token_hashes:
            self._token_cache.pop(token_hash, None)

    async def require_admin(self, request: MatrixRequest) -> Requester:
        requester = await self.get_user_by_req(request)
        user = await self.users.get_user(requester.user_id)
        if user is None or not user.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
        return requester
