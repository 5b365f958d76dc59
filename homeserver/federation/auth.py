"""Who sent this federation request: the X-Matrix signature checked against the origin's
key, the destination checked to be us, the origin checked against the whitelist."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crypto.request_signing import InvalidAuthHeader, parse_x_matrix, verify_request
from homeserver.errors import Codes, MatrixError, forbidden
from homeserver.federation.keyring import KeyNotFound
from homeserver.http.servlet import parse_json_value

if TYPE_CHECKING:
    from homeserver.http.server import MatrixRequest
    from homeserver.server import HomeServer


def unauthorized(msg: str) -> MatrixError:
    return MatrixError(401, Codes.UNAUTHORIZED, msg)


class FederationAuth:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.server_name = hs.config.server_name
        self._in_flight: dict[str, int] = {}

    async def authenticate(self, request: MatrixRequest) -> tuple[str, Any]:
        """(origin, parsed JSON body or None) of a correctly signed request to us."""
        raw = request.content.read() if request.content is not None else b""
        body = parse_json_value(raw) if raw.strip() else None
        headers = request.requestHeaders.getRawHeaders(b"authorization") or []
        if not headers:
            raise unauthorized("Missing X-Matrix Authorization header")
        uri = request.uri.decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace")
        last_error = "Invalid X-Matrix signature"
        for header in headers:
            try:
                auth = parse_x_matrix(header.decode("utf-8", "replace"))
            except InvalidAuthHeader as e:
                last_error = str(e)
                continue
            if auth.destination is not None and auth.destination != self.server_name:
                last_error = "Request is for another server"
                continue
            if not self.hs.config.federation.allows(auth.origin):
                raise forbidden("Federation with this server is not allowed")
            try:
                key = await self.hs.keyring.verify_key(
                    auth.origin, auth.key_id, self.hs.clock.time_msec()
                )
            except KeyNotFound as e:
                last_error = f"Unknown key: {e}"
                continue
            if verify_request(auth, method, uri, self.server_name, body, key):
                self._admit(request, auth.origin)
                return auth.origin, body
        raise unauthorized(last_error)

    def _admit(self, request: MatrixRequest, origin: str) -> None:
        """One server's share: a token-bucket rate and a cap on requests in progress, so
        a flood or a pile of slow requests from it cannot crowd out anyone else."""
        self.hs.ratelimiter.check("federation", origin)
        cap = self.hs.config.federation.max_concurrent_requests_per_origin
        if self._in_flight.get(origin, 0) >= cap:
            raise MatrixError(429, Codes.LIMIT_EXCEEDED, "Too many requests in progress",
                              retry_after_ms=1000)  # fmt: skip
        self._in_flight[origin] = self._in_flight.get(origin, 0) + 1

        def done(_: object) -> None:
            left = self._in_flight.get(origin, 1) - 1
            if left > 0:
                self._in_flight[origin] = left
            else:
                self._in_flight.pop(origin, None)

        request.notifyFinish().addBoth(done)
