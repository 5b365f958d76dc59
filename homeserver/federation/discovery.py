"""Server discovery: turn a server name into where to connect, which Host header to send and
which name the TLS certificate must be valid for, following the server-server spec's
"Resolving server names" steps (IP literal, explicit port, /.well-known, SRV, port 8448).

Network access is injected (``fetch_well_known``, ``srv_lookup``) so the decision logic can be
tested without DNS or HTTP; real implementations are at the bottom of the module.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from cachetools import LRUCache
from twisted.internet import defer
from twisted.names import client as dns_client
from twisted.names import dns
from twisted.names.error import DNSNameError, DomainError

from homeserver.caches import MeasuredLRU

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8448

# Well-known caching (spec: default 24 h, cap 48 h, errors up to an hour with back-off).
WELL_KNOWN_DEFAULT_TTL_MS = 24 * 3600 * 1000
WELL_KNOWN_MAX_TTL_MS = 48 * 3600 * 1000
# Floor for any cached answer, so no-store / max-age=0 cannot make us refetch on every request.
WELL_KNOWN_MIN_TTL_MS = 5 * 60 * 1000
# Failures: first one cached this long, doubling per consecutive failure up to the cap.
WELL_KNOWN_FAILURE_INITIAL_TTL_MS = 5 * 60 * 1000
WELL_KNOWN_FAILURE_MAX_TTL_MS = 3600 * 1000
WELL_KNOWN_MAX_BODY_BYTES = 50 * 1024
WELL_KNOWN_MAX_REDIRECTS = 5

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PORT_RE = re.compile(r"[0-9]{1,5}", re.ASCII)
_IPV4_SHAPE_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}", re.ASCII)
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}", re.ASCII)
_DNS_NAME_RE = re.compile(r"[A-Za-z0-9.-]{1,255}", re.ASCII)


class InvalidServerName(ValueError):
    """A server name that does not match the spec grammar, so it cannot be resolved."""


class WellKnownFetchError(Exception):
    """The /.well-known fetch failed in a way that is not an HTTP status (loop, size, scheme)."""


@dataclass(frozen=True)
class ServerName:
    """A parsed server name; ``host`` is normalised for connecting, ``text`` kept for headers."""

    text: str
    host: str
    port: int | None
    is_ip: bool


@dataclass(frozen=True)
class ResolvedServer:
    """Where to connect and what to present; an IP ``tls_server_name`` means: send no SNI."""

    host: str
    port: int
    host_header: str
    tls_server_name: str


@dataclass(frozen=True)
class WellKnownResponse:
    """The final HTTP response to a /.well-known/matrix/server request."""

    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class SrvRecord:
    """One SRV answer; ``target`` without the trailing dot, "." meaning "no service here"."""

    priority: int
    weight: int
    port: int
    target: str


FetchWellKnown = Callable[[str], Awaitable[WellKnownResponse]]
SrvLookup = Callable[[str], Awaitable[list[SrvRecord]]]


def _parse_port(text: str, whole: str) -> int:
    if not _PORT_RE.fullmatch(text):
        raise InvalidServerName(f"bad port in server name {whole!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise InvalidServerName(f"port out of range in server name {whole!r}")
    return port


def parse_server_name(text: str) -> ServerName:
    """Check ``text`` against the appendix grammar, so junk never reaches DNS or HTTP."""
    if not isinstance(text, str) or not text:
        raise InvalidServerName("empty server name")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidServerName(f"unterminated IPv6 literal in {text!r}")
        literal, rest = text[1:end], text[end + 1 :]
        if not _IPV6_CHARS_RE.fullmatch(literal):
            raise InvalidServerName(f"bad IPv6 literal in {text!r}")
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError as e:
            raise InvalidServerName(f"bad IPv6 literal in {text!r}") from e
        if rest == "":
            port = None
        elif rest.startswith(":"):
            port = _parse_port(rest[1:], text)
        else:
            raise InvalidServerName(f"junk after IPv6 literal in {text!r}")
        return ServerName(text=text, host=str(address), port=port, is_ip=True)

    host, sep, port_text = text.partition(":")
    port = _parse_port(port_text, text) if sep else None
    if _IPV4_SHAPE_RE.fullmatch(host):
        octets = [int(part) for part in host.split(".")]
        if any(o > 255 for o in octets):
            raise InvalidServerName(f"bad IPv4 literal in {text!r}")
        # Normalised so a leading zero is never read as octal by a resolver.
        return ServerName(text=text, host=".".join(map(str, octets)), port=port, is_ip=True)
    if not _DNS_NAME_RE.fullmatch(host):
        raise InvalidServerName(f"bad hostname in server name {text!r}")
    if any(not 1 <= len(label) <= 63 for label in host.split(".")):
        # Empty or over-long labels cannot be looked up in DNS.
        raise InvalidServerName(f"bad hostname in server name {text!r}")
    return ServerName(text=text, host=host, port=port, is_ip=False)


def parse_well_known_body(body: bytes) -> ServerName | None:
    """The delegated server name, or None when the body is not a valid well-known document."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    value = data.get("m.server")
    if not isinstance(value, str):
        return None
    try:
        return parse_server_name(value)
    except InvalidServerName:
        return None


def _header(headers: dict[str, str], name: str) -> str | None:
    """Case-insensitive header lookup: fetchers differ in how they spell header names."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _http_date_ms(value: str) -> int | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return int(parsed.timestamp() * 1000)


def cache_lifetime_ms(headers: dict[str, str], now_ms: int) -> int | None:
    """Freshness lifetime the response asks for (RFC 9111), or None when it says nothing."""
    cache_control = _header(headers, "Cache-Control")
    if cache_control is not None:
        max_age: int | None = None
        for directive in cache_control.split(","):
            name, _, value = directive.strip().partition("=")
            name = name.strip().lower()
            if name in ("no-store", "no-cache"):
                return 0
            if name == "max-age":
                value = value.strip().strip('"')
                # RFC 9111: an invalid max-age means stale.
                max_age = int(value) * 1000 if value.isascii() and value.isdigit() else 0
        if max_age is not None:
            return max_age
    expires = _header(headers, "Expires")
    if expires is not None:
        expires_ms = _http_date_ms(expires)
        if expires_ms is None:
            return 0  # RFC 9111: an invalid Expires means already expired
        date = _header(headers, "Date")
        base_ms = _http_date_ms(date) if date is not None else None
        return max(0, expires_ms - (base_ms if base_ms is not None else now_ms))
    return None


def order_srv_records(records: list[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 order: ascending priority, weighted random order within a priority."""
    usable = [r for r in records if r.target not in ("", ".") and r.port != 0]
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in usable}):
        # Zero-weight records first, so they only win when the random number is 0.
        group = [r for r in usable if r.priority == priority]
        remaining = sorted(group, key=lambda r: r.weight != 0)
        while remaining:
            total = sum(r.weight for r in remaining)
            if total == 0:
                chosen = remaining[rng.randrange(len(remaining))]
            else:
                # RFC 2782 draws from [0, total]; 0 is only drawn when a zero-weight record can
                # take it, otherwise the first record would win one draw more than its weight.
                has_zero = remaining[0].weight == 0
                threshold = rng.randint(0 if has_zero else 1, total)
                running = 0
                chosen = remaining[-1]
                for record in remaining:
                    running += record.weight
                    if running >= threshold:
                        chosen = record
                        break
            ordered.append(chosen)
            remaining.remove(chosen)
    return ordered


@dataclass(frozen=True)
class _WellKnownEntry:
    delegated: ServerName | None
    expires_at_ms: int
    failures: int  # consecutive failed fetches, for back-off; 0 after a valid answer


class ServerResolver:
    """Resolves server names per the spec, caching /.well-known answers per hostname."""

    def __init__(
        self,
        clock_ms: Callable[[], int],
        fetch_well_known: FetchWellKnown,
        srv_lookup: SrvLookup,
        *,
        rng: random.Random | None = None,
        cache_size: int | None = None,
    ) -> None:
        self._clock_ms = clock_ms
        self._fetch_well_known = fetch_well_known
        self._srv_lookup = srv_lookup
        self._rng = rng if rng is not None else random.Random()
        self._well_known_cache: LRUCache[str, _WellKnownEntry] = MeasuredLRU(
            "well_known", cache_size
        )
        # Hostnames with a fetch in progress -> callers waiting for it, so one fetch serves all.
        self._in_flight: dict[str, list[defer.Deferred[ServerName | None]]] = {}

    async def resolve(self, server_name: str) -> ResolvedServer:
        """Spec steps 1-6; raises InvalidServerName, or the SRV lookup's DNS error."""
        name = parse_server_name(server_name)
        if name.is_ip:  # step 1
            return ResolvedServer(name.host, name.port or DEFAULT_PORT, name.text, name.host)
        if name.port is not None:  # step 2
            return ResolvedServer(name.host, name.port, name.text, name.host)
        delegated = await self._well_known(name.host)  # step 3
        if delegated is None:
            return await self._resolve_without_port(name.host)  # steps 4-6
        if delegated.is_ip:  # step 3.1
            port = delegated.port or DEFAULT_PORT
            return ResolvedServer(delegated.host, port, delegated.text, delegated.host)
        if delegated.port is not None:  # step 3.2
            return ResolvedServer(delegated.host, delegated.port, delegated.text, delegated.host)
        return await self._resolve_without_port(delegated.host)  # steps 3.3-3.5

    async def _resolve_without_port(self, hostname: str) -> ResolvedServer:
        """SRV _matrix-fed, then deprecated _matrix, then port 8448; Host/TLS stay ``hostname``."""
        for service in ("_matrix-fed._tcp.", "_matrix._tcp."):
            records = order_srv_records(await self._srv_lookup(service + hostname), self._rng)
            if records:
                chosen = records[0]
                return ResolvedServer(chosen.target, chosen.port, hostname, hostname)
        return ResolvedServer(hostname, DEFAULT_PORT, hostname, hostname)

    async def _well_known(self, hostname: str) -> ServerName | None:
        """Cached delegation for ``hostname``; concurrent callers share one fetch."""
        key = hostname.lower()
        entry = self._well_known_cache.get(key)
        if entry is not None and entry.expires_at_ms > self._clock_ms():
            return entry.delegated
        waiters = self._in_flight.get(key)
        if waiters is not None:
            waiter: defer.Deferred[ServerName | None] = defer.Deferred()
            waiters.append(waiter)
            return await waiter
        waiters = self._in_flight[key] = []
        try:
            delegated = await self._refresh_well_known(key, hostname, entry)
        except BaseException as e:
            del self._in_flight[key]
            for waiter in waiters:
                waiter.errback(e)
            raise
        del self._in_flight[key]
        for waiter in waiters:
            waiter.callback(delegated)
        return delegated

    async def _refresh_well_known(
        self, key: str, hostname: str, previous: _WellKnownEntry | None
    ) -> ServerName | None:
        try:
            response = await self._fetch_well_known(hostname)
        except defer.CancelledError:
            raise
        except Exception as e:
            logger.info("Fetching /.well-known/matrix/server from %s failed: %s", hostname, e)
            response = None
        now = self._clock_ms()
        delegated = None
        if response is not None and response.status == 200:
            delegated = parse_well_known_body(response.body)
            if delegated is None:
                logger.info("Invalid /.well-known/matrix/server from %s", hostname)
        if response is not None and delegated is not None:
            lifetime = cache_lifetime_ms(response.headers, now)
            if lifetime is None:
                lifetime = WELL_KNOWN_DEFAULT_TTL_MS
            lifetime = min(max(lifetime, WELL_KNOWN_MIN_TTL_MS), WELL_KNOWN_MAX_TTL_MS)
            self._well_known_cache[key] = _WellKnownEntry(delegated, now + lifetime, 0)
            return delegated
        failures = previous.failures + 1 if previous is not None else 1
        lifetime = min(
            WELL_KNOWN_FAILURE_INITIAL_TTL_MS * 2 ** min(failures - 1, 16),
            WELL_KNOWN_FAILURE_MAX_TTL_MS,
        )
        self._well_known_cache[key] = _WellKnownEntry(None, now + lifetime, failures)
        return None


# Real network implementations.


async def twisted_srv_lookup(name: str) -> list[SrvRecord]:
    """SRV lookup with Twisted's resolver; a name that does not exist is just "no records"."""
    try:
        answers, _authority, _additional = await dns_client.lookupService(name)
    except DNSNameError:
        return []
    except DomainError as e:
        if type(e) is DomainError:  # the hosts-file resolver's "not found"
            return []
        raise
    records = []
    for answer in answers:
        if answer.type != dns.SRV:  # e.g. CNAMEs followed on the way
            continue
        payload = answer.payload
        target = payload.target.name.decode("ascii", errors="replace").rstrip(".")
        records.append(SrvRecord(payload.priority, payload.weight, payload.port, target or "."))
    return records


def make_well_known_fetcher(
    https_get: Callable[[str], Awaitable[WellKnownResponse]],
    *,
    max_redirects: int = WELL_KNOWN_MAX_REDIRECTS,
    max_body_bytes: int = WELL_KNOWN_MAX_BODY_BYTES,
) -> FetchWellKnown:
    """Wrap a single-request HTTPS GET (which should not follow redirects itself, and should
    bound time and body size) into the ``fetch_well_known`` the resolver wants: redirects are
    followed here, HTTPS only, with loop detection and a hop limit."""

    async def fetch(hostname: str) -> WellKnownResponse:
        url = f"https://{hostname}/.well-known/matrix/server"
        seen = {url}
        for _ in range(max_redirects + 1):
            response = await https_get(url)
            location = _header(response.headers, "Location")
            if response.status not in _REDIRECT_STATUSES or location is None:
                if len(response.body) > max_body_bytes:
                    raise WellKnownFetchError(f"well-known body from {hostname} too large")
                return response
            url = urljoin(url, location.strip())
            if urlsplit(url).scheme != "https":
                raise WellKnownFetchError(f"well-known for {hostname} redirected off HTTPS")
            if url in seen:
                raise WellKnownFetchError(f"well-known for {hostname} redirects in a loop")
            seen.add(url)
        raise WellKnownFetchError(f"well-known for {hostname}: too many redirects")

    return fetch
