"""Outbound federation HTTP: treq over one connection pool, TLS to the resolved host with
the certificate checked for the name the spec says, requests signed with X-Matrix.

Nothing here waits longer than ``federation.request_timeout`` (or the caller's timeout).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import treq
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from crypto.request_signing import sign_request
from homeserver.federation.discovery import (
    ResolvedServer,
    ServerResolver,
    WellKnownResponse,
    make_well_known_fetcher,
    twisted_srv_lookup,
)
from homeserver.http.outbound import AddressFilter, filtered_web_agent

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_RESPONSE_BYTES = 100 * 1024 * 1024


class FederationError(Exception):
    """A remote server could not be reached, or answered with an error."""

    def __init__(self, destination: str, message: str, code: int = 0, body: Any = None) -> None:
        super().__init__(f"{destination}: {message}")
        self.destination = destination
        self.code = code
        self.body = body

    @property
    def errcode(self) -> str | None:
        return self.body.get("errcode") if isinstance(self.body, dict) else None


@implementer(IOpenSSLTrustRoot)
class _SystemAndExtraCA:
    """The system's CAs plus the configured extra CA file."""

    def __init__(self, ca_file: str | None) -> None:
        self.ca_file = ca_file

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        if self.ca_file:
            context.load_verify_locations(self.ca_file)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedTLS:
    """TLS without certificate checks (``federation.verify_certificates: false``)."""

    def __init__(self, server_name: str) -> None:
        self.server_name = server_name
        self.context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        self.context.set_verify(SSL.VERIFY_NONE, lambda *_: True)

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        if not (isIPAddress(self.server_name) or isIPv6Address(self.server_name)):
            connection.set_tlsext_host_name(self.server_name.encode("idna"))
        connection.set_app_data(tls_protocol)
        return connection


@implementer(IStreamClientEndpoint)
class _FederationEndpoint:
    """TLS to a destination as the spec's discovery resolves it, to allowed addresses only."""

    def __init__(self, client: FederationClient, destination: str) -> None:
        self.client = client
        self.destination = destination

    def connect(self, protocol_factory: Any) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._connect(protocol_factory))

    async def _connect(self, protocol_factory: Any) -> Any:
        resolved = await self.client.resolver.resolve(self.destination)
        address = await self.client.address_filter.allowed_address(resolved.host, resolved.port)
        endpoint: Any = HostnameEndpoint(self.client.reactor, address, resolved.port)
        tls: Any = wrapClientTLS(self.client.tls_creator(resolved.tls_server_name), endpoint)
        return await tls.connect(protocol_factory)


@implementer(IAgentEndpointFactory)
class _EndpointFactory:
    def __init__(self, client: FederationClient) -> None:
        self.client = client

    def endpointForURI(self, uri: Any) -> _FederationEndpoint:
        return _FederationEndpoint(self.client, uri.netloc.decode("ascii"))


class FederationClient:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.reactor = hs.reactor
        self.server_name = hs.config.server_name
        self.config = hs.config.federation
        self.resolver = ServerResolver(
            hs.clock.time_msec, make_well_known_fetcher(self.https_get), twisted_srv_lookup
        )
        self._trust_root = _SystemAndExtraCA(self.config.ca_file)
        pool = HTTPConnectionPool(hs.reactor, persistent=True)
        pool.maxPersistentPerHost = 5
        pool.cachedConnectionTimeout = 120
        self.address_filter = AddressFilter(
            self.config.ip_range_blacklist, self.config.ip_range_whitelist
        )
        agent = Agent.usingEndpointFactory(hs.reactor, _EndpointFactory(self), pool=pool)
        self._http = treq.client.HTTPClient(agent)
        self._pool = pool
        # Its own pool: a connection to https://host/ (port 443, for a .well-known) must
        # never carry a federation request for the server named ``host``.
        self._plain_pool = HTTPConnectionPool(hs.reactor, persistent=True)
        self._plain_agent: Any = filtered_web_agent(
            hs.reactor, self.address_filter, self.tls_creator, self._plain_pool, https_only=True
        )

    async def allowed_address(self, host: str, port: int) -> str:
        return await self.address_filter.allowed_address(host, port)

    def tls_creator(self, server_name: str) -> Any:
        if not self.config.verify_certificates:
            return _UnverifiedTLS(server_name)
        trust_root: Any = self._trust_root
        return optionsForClientTLS(server_name, trustRoot=trust_root)

    async def close(self) -> None:
        await self._pool.closeCachedConnections()
        await self._plain_pool.closeCachedConnections()

    async def request(
        self,
        destination: str,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        signed: bool = True,
        timeout_ms: int | None = None,
    ) -> Any:
        """One request; the parsed JSON answer (an object: every API we call answers one,
        so callers may use it as a dict), or FederationError."""
        code, _, content = await self.request_raw(
            destination, method, path, query, body, signed, timeout_ms, MAX_RESPONSE_BYTES
        )
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = None
        if code >= 300:
            raise FederationError(destination, f"HTTP {code}: {content[:200]!r}", code, parsed)
        if parsed is None and content:
            raise FederationError(destination, "answer is not JSON", code)
        if parsed is not None and not isinstance(parsed, dict):
            raise FederationError(destination, "answer is not a JSON object", code)
        return parsed

    async def request_raw(
        self,
        destination: str,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        signed: bool = True,
        timeout_ms: int | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; the body read only up to ``max_bytes``
        (a larger one is a FederationError, with the connection dropped)."""
        if not self.config.allows(destination):
            raise FederationError(destination, "not in federation.domain_whitelist", 403)
        uri = path
        if query:
            uri += "?" + urlencode(query, doseq=True)
        try:
            resolved: ResolvedServer = await self.resolver.resolve(destination)
        except Exception as e:  # an invalid name, a DNS failure
            raise FederationError(destination, f"cannot resolve: {e}") from None
        headers = Headers({"Host": [resolved.host_header], "User-Agent": ["homeserver"]})
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers.addRawHeader("Content-Type", "application/json")
        if signed:
            authorization = sign_request(
                method, uri, self.server_name, destination, body, self.hs.signing_key
            )
            headers.addRawHeader("Authorization", authorization)
        timeout = (timeout_ms or self.config.request_timeout_ms) / 1000
        try:
            response = await self._http.request(
                method,
                f"https://{destination}{uri}",
                headers=headers,
                data=data,
                timeout=timeout,
            )
            content = await read_bounded(response, max_bytes)
        except ResponseTooLarge:
            raise FederationError(destination, "response too large") from None
        except Exception as e:  # connection refused, TLS failure, timeout...
            raise FederationError(destination, f"{type(e).__name__}: {e}") from None
        return response.code, _headers(response), content

    async def get_json(self, destination: str, path: str, **kwargs: Any) -> Any:
        return await self.request(destination, "GET", path, **kwargs)

    async def put_json(self, destination: str, path: str, body: Any, **kwargs: Any) -> Any:
        return await self.request(destination, "PUT", path, body=body, **kwargs)

    async def post_json(self, destination: str, path: str, body: Any, **kwargs: Any) -> Any:
        return await self.request(destination, "POST", path, body=body, **kwargs)

    async def https_get(self, url: str, max_bytes: int = 50_000) -> WellKnownResponse:
        """One unsigned GET (no redirects followed: callers follow them themselves), the
        certificate checked for the URL's host; for ``.well-known`` and media locations."""
        response = await treq.get(url, agent=self._plain_agent, timeout=15, allow_redirects=False)
        body = await read_bounded(response, max_bytes)
        return WellKnownResponse(response.code, body, _headers(response))


class ResponseTooLarge(Exception):
    pass


async def read_bounded(response: Any, max_bytes: int) -> bytes:
    """The body, refused (and the connection dropped) as soon as it passes ``max_bytes``:
    a hostile server cannot make us hold more."""
    length = response.length
    if isinstance(length, int) and length > max_bytes:
        response.deliverBody(_Discard())
        raise ResponseTooLarge()
    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > max_bytes:
            raise ResponseTooLarge()
        chunks.append(data)

    await treq.collect(response, collect)
    return b"".join(chunks)


class _Discard:
    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass


def _headers(response: Any) -> dict[str, str]:
    return {
        k.decode("latin-1").lower(): v[-1].decode("latin-1")
        for k, v in response.headers.getAllRawHeaders()
    }
