"""Outbound connections that never reach addresses they must not (private networks,
loopback, link-local by default): the address is checked after DNS resolution, on every
connection, so redirects and DNS tricks cannot get past it."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, threads
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer


class BlockedAddress(Exception):
    """Every address of the host is in the outbound IP blacklist."""


class AddressFilter:
    def __init__(self, blacklist: Iterable[str], whitelist: Iterable[str] = ()) -> None:
        self._blacklist = [ipaddress.ip_network(n) for n in blacklist]
        self._whitelist = [ipaddress.ip_network(n) for n in whitelist]

    def blocked(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1: judge it as that
        if any(ip in network for network in self._whitelist):
            return False
        return any(ip in network for network in self._blacklist)

    async def allowed_address(self, host: str, port: int) -> str:
        """An address of ``host`` we may connect to; BlockedAddress if it has none."""
        infos = await threads.deferToThread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            if not self.blocked(address):
                return address
        raise BlockedAddress(f"{host} resolves only to blocked addresses {addresses}")


@implementer(IStreamClientEndpoint)
class FilteredEndpoint:
    """A TCP (or TLS, with ``tls_creator``) connection to an allowed address of host."""

    def __init__(
        self,
        reactor: Any,
        address_filter: AddressFilter,
        host: str,
        port: int,
        tls_creator: Callable[[str], Any] | None,
    ) -> None:
        self.reactor = reactor
        self.filter = address_filter
        self.host = host
        self.port = port
        self.tls_creator = tls_creator

    def connect(self, protocol_factory: Any) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._connect(protocol_factory))

    async def _connect(self, protocol_factory: Any) -> Any:
        address = await self.filter.allowed_address(self.host, self.port)
        endpoint: Any = HostnameEndpoint(self.reactor, address, self.port)
        if self.tls_creator is not None:
            endpoint = wrapClientTLS(self.tls_creator(self.host), endpoint)
        return await endpoint.connect(protocol_factory)


@implementer(IAgentEndpointFactory)
class FilteredWebEndpoints:
    """Endpoints for plain web URLs (http and https), each address checked."""

    def __init__(
        self,
        reactor: Any,
        address_filter: AddressFilter,
        tls_creator: Callable[[str], Any],
        https_only: bool = False,
    ) -> None:
        self.reactor = reactor
        self.filter = address_filter
        self.tls_creator = tls_creator
        self.https_only = https_only

    def endpointForURI(self, uri: Any) -> FilteredEndpoint:
        if uri.scheme not in (b"http", b"https") or (self.https_only and uri.scheme != b"https"):
            raise BlockedAddress(f"scheme {uri.scheme!r} is not fetched")
        tls = self.tls_creator if uri.scheme == b"https" else None
        return FilteredEndpoint(self.reactor, self.filter, uri.host.decode("ascii"), uri.port,
                                tls)  # fmt: skip


def filtered_web_agent(
    reactor: Any,
    address_filter: AddressFilter,
    tls_creator: Callable[[str], Any],
    pool: Any,
    https_only: bool = False,
) -> Any:
    """An HTTP agent for URLs someone else chose: each connection goes only to an allowed
    address of the host, checked after resolution."""
    from twisted.web.client import Agent

    endpoints = FilteredWebEndpoints(reactor, address_filter, tls_creator, https_only)
    return Agent.usingEndpointFactory(reactor, endpoints, pool=pool)


def parse_http_url(url: object) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL a client gave us, or None if it is not one
    we could fetch (urllib raises ValueError on some malformed ones, e.g. a bad port)."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)
