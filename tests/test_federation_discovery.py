"""Server discovery per the server-server spec ("Resolving server names"): every step, the
Host header and TLS name each one yields, /.well-known validation and caching on a fake
clock, SRV ordering, and server-name validation. No network: DNS and HTTP are fakes."""

from __future__ import annotations

import random
from collections.abc import Awaitable
from typing import Any, cast

import pytest
from twisted.internet import defer
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSServerError
from twisted.python.failure import Failure

from homeserver.federation import discovery
from homeserver.federation.discovery import (
    InvalidServerName,
    ResolvedServer,
    ServerResolver,
    SrvRecord,
    WellKnownFetchError,
    WellKnownResponse,
    cache_lifetime_ms,
    make_well_known_fetcher,
    order_srv_records,
    parse_server_name,
    twisted_srv_lookup,
)

HOUR_MS = 3600 * 1000
MINUTE_MS = 60 * 1000


def run(awaitable: Awaitable[Any]) -> Any:
    """Drive an awaitable whose fakes never block; its result must be there at once."""

    async def wrapper() -> Any:
        return await awaitable

    results: list[Any] = []
    defer.ensureDeferred(wrapper()).addBoth(results.append)
    assert results, "the coroutine did not finish"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def well_known(server: str, headers: dict[str, str] | None = None) -> WellKnownResponse:
    return WellKnownResponse(200, b'{"m.server": "%s"}' % server.encode(), headers or {})


NOT_FOUND = WellKnownResponse(404, b"", {})


class FakeNet:
    """Scripted /.well-known answers and SRV records, recording every lookup made."""

    def __init__(self) -> None:
        self.now_ms = 1_000_000_000
        self.well_known: dict[str, WellKnownResponse | Exception] = {}
        self.srv: dict[str, list[SrvRecord] | Exception] = {}
        self.fetches: list[str] = []
        self.srv_lookups: list[str] = []

    def clock(self) -> int:
        return self.now_ms

    async def fetch(self, hostname: str) -> WellKnownResponse:
        self.fetches.append(hostname)
        answer = self.well_known.get(hostname, NOT_FOUND)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def lookup(self, name: str) -> list[SrvRecord]:
        self.srv_lookups.append(name)
        answer = self.srv.get(name, [])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def resolver(self, **kwargs: Any) -> ServerResolver:
        return ServerResolver(self.clock, self.fetch, self.lookup, **kwargs)


@pytest.fixture
def net() -> FakeNet:
    return FakeNet()


def resolve(net: FakeNet, name: str, resolver: ServerResolver | None = None) -> ResolvedServer:
    return run((resolver or net.resolver()).resolve(name))


# Step 1: IP literals.


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1.2.3.4", ResolvedServer("1.2.3.4", 8448, "1.2.3.4", "1.2.3.4")),
        ("1.2.3.4:1234", ResolvedServer("1.2.3.4", 1234, "1.2.3.4:1234", "1.2.3.4")),
        ("[::1]", ResolvedServer("::1", 8448, "[::1]", "::1")),
        ("[::1]:8448", ResolvedServer("::1", 8448, "[::1]:8448", "::1")),
        (
            "[2001:DB8:0::1]:443",
            ResolvedServer("2001:db8::1", 443, "[2001:DB8:0::1]:443", "2001:db8::1"),
        ),
        (
            "[::ffff:1.2.3.4]",
            ResolvedServer("::ffff:102:304", 8448, "[::ffff:1.2.3.4]", "::ffff:102:304"),
        ),
    ],
)
def test_ip_literal_is_used_directly(net: FakeNet, name: str, expected: ResolvedServer) -> None:
    assert resolve(net, name) == expected
    assert net.fetches == [] and net.srv_lookups == []


# Step 2: hostname with explicit port.


def test_hostname_with_port_skips_well_known_and_srv(net: FakeNet) -> None:
    net.well_known["example.org"] = well_known("elsewhere.example:443")
    net.srv["_matrix-fed._tcp.example.org"] = [SrvRecord(0, 0, 9999, "srv.example")]
    got = resolve(net, "example.org:8449")
    assert got == ResolvedServer("example.org", 8449, "example.org:8449", "example.org")
    assert net.fetches == [] and net.srv_lookups == []


# Step 3: /.well-known delegation.


@pytest.mark.parametrize(
    ("m_server", "expected"),
    [
        ("10.0.0.1", ResolvedServer("10.0.0.1", 8448, "10.0.0.1", "10.0.0.1")),
        ("10.0.0.1:8000", ResolvedServer("10.0.0.1", 8000, "10.0.0.1:8000", "10.0.0.1")),
        ("[2001:db8::2]", ResolvedServer("2001:db8::2", 8448, "[2001:db8::2]", "2001:db8::2")),
        (
            "[2001:db8::2]:8443",
            ResolvedServer("2001:db8::2", 8443, "[2001:db8::2]:8443", "2001:db8::2"),
        ),
    ],
)
def test_well_known_delegating_to_ip_literal(
    net: FakeNet, m_server: str, expected: ResolvedServer
) -> None:
    """Step 3.1: the IP is used, Host header is the IP (with port if given), no SRV."""
    net.well_known["example.org"] = well_known(m_server)
    assert resolve(net, "example.org") == expected
    assert net.fetches == ["example.org"]
    assert net.srv_lookups == []


def test_well_known_delegating_to_host_with_port(net: FakeNet) -> None:
    """Step 3.2: delegated host and port; Host header has the port, cert is for the host."""
    net.well_known["example.org"] = well_known("matrix.example.net:443")
    net.srv["_matrix-fed._tcp.matrix.example.net"] = [SrvRecord(0, 0, 9999, "srv.example")]
    got = resolve(net, "example.org")
    assert got == ResolvedServer(
        "matrix.example.net", 443, "matrix.example.net:443", "matrix.example.net"
    )
    assert net.srv_lookups == []


def test_well_known_delegated_host_uses_matrix_fed_srv(net: FakeNet) -> None:
    """Step 3.3: SRV on the delegated name; Host and cert are the delegated name, not the
    SRV target, and the original hostname's SRV records are never consulted."""
    net.well_known["example.org"] = well_known("matrix.example.net")
    net.srv["_matrix-fed._tcp.matrix.example.net"] = [SrvRecord(10, 0, 8500, "fed1.example.net")]
    net.srv["_matrix-fed._tcp.example.org"] = [SrvRecord(0, 0, 1, "wrong.example")]
    got = resolve(net, "example.org")
    assert got == ResolvedServer(
        "fed1.example.net", 8500, "matrix.example.net", "matrix.example.net"
    )
    assert net.srv_lookups == ["_matrix-fed._tcp.matrix.example.net"]


def test_well_known_delegated_host_falls_back_to_deprecated_srv(net: FakeNet) -> None:
    """Step 3.4: no _matrix-fed record, so the deprecated _matrix._tcp one is used."""
    net.well_known["example.org"] = well_known("matrix.example.net")
    net.srv["_matrix._tcp.matrix.example.net"] = [SrvRecord(10, 0, 8501, "old.example.net")]
    got = resolve(net, "example.org")
    assert got == ResolvedServer(
        "old.example.net", 8501, "matrix.example.net", "matrix.example.net"
    )
    assert net.srv_lookups == [
        "_matrix-fed._tcp.matrix.example.net",
        "_matrix._tcp.matrix.example.net",
    ]


def test_well_known_delegated_host_without_srv_uses_8448(net: FakeNet) -> None:
    """Step 3.5."""
    net.well_known["example.org"] = well_known("matrix.example.net")
    got = resolve(net, "example.org")
    assert got == ResolvedServer(
        "matrix.example.net", 8448, "matrix.example.net", "matrix.example.net"
    )
    assert len(net.srv_lookups) == 2


def test_well_known_is_not_followed_a_second_time(net: FakeNet) -> None:
    """Only the original hostname's well-known counts: the delegate's is never fetched."""
    net.well_known["example.org"] = well_known("matrix.example.net")
    net.well_known["matrix.example.net"] = well_known("third.example:1")
    got = resolve(net, "example.org")
    assert got.host == "matrix.example.net" and got.port == 8448
    assert net.fetches == ["example.org"]


# Steps 4-6: no usable /.well-known.


def test_no_well_known_uses_matrix_fed_srv(net: FakeNet) -> None:
    net.srv["_matrix-fed._tcp.example.org"] = [SrvRecord(10, 5, 8448, "fed.example.org")]
    net.srv["_matrix._tcp.example.org"] = [SrvRecord(0, 0, 1, "old.example.org")]
    got = resolve(net, "example.org")
    assert got == ResolvedServer("fed.example.org", 8448, "example.org", "example.org")
    assert net.fetches == ["example.org"]
    assert net.srv_lookups == ["_matrix-fed._tcp.example.org"]


def test_no_well_known_falls_back_to_deprecated_srv(net: FakeNet) -> None:
    net.srv["_matrix._tcp.example.org"] = [SrvRecord(10, 5, 443, "old.example.org")]
    got = resolve(net, "example.org")
    assert got == ResolvedServer("old.example.org", 443, "example.org", "example.org")
    assert net.srv_lookups == ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"]


def test_no_well_known_no_srv_uses_8448(net: FakeNet) -> None:
    got = resolve(net, "example.org")
    assert got == ResolvedServer("example.org", 8448, "example.org", "example.org")
    assert net.srv_lookups == ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"]


def test_srv_target_dot_means_no_record(net: FakeNet) -> None:
    """RFC 2782: a target of "." says the service is not offered there; fall through."""
    net.srv["_matrix-fed._tcp.example.org"] = [SrvRecord(0, 0, 0, ".")]
    net.srv["_matrix._tcp.example.org"] = [SrvRecord(0, 0, 8555, "old.example.org")]
    assert resolve(net, "example.org").port == 8555


def test_srv_dns_error_propagates(net: FakeNet) -> None:
    """A failing DNS server is not "no record": guessing port 8448 could pick a wrong host."""
    net.srv["_matrix-fed._tcp.example.org"] = DNSServerError("SERVFAIL")
    with pytest.raises(DNSServerError):
        resolve(net, "example.org")


@pytest.mark.parametrize(
    "response",
    [
        WellKnownResponse(200, b"not json", {}),
        WellKnownResponse(200, b"", {}),
        WellKnownResponse(200, b'["m.server"]', {}),
        WellKnownResponse(200, b'"matrix.example.net"', {}),
        WellKnownResponse(200, b"{}", {}),
        WellKnownResponse(200, b'{"m.server": 443}', {}),
        WellKnownResponse(200, b'{"m.server": null}', {}),
        WellKnownResponse(200, b'{"m.server": ["matrix.example.net"]}', {}),
        WellKnownResponse(200, b'{"m.server": ""}', {}),
        WellKnownResponse(200, b'{"m.server": "matrix.example.net/path"}', {}),
        WellKnownResponse(200, b'{"m.server": "https://matrix.example.net"}', {}),
        WellKnownResponse(200, b'{"m.server": "matrix.example.net:99999"}', {}),
        WellKnownResponse(200, b'{"m.server": "user@matrix.example.net"}', {}),
        WellKnownResponse(200, b'{"m.server": "matrix.example.net"', {}),
        WellKnownResponse(200, b'{"m.server": "matrix\xff.example.net"}', {}),
        WellKnownResponse(200, b"[" * 100_000, {}),
        WellKnownResponse(404, b'{"m.server": "matrix.example.net"}', {}),
        WellKnownResponse(500, b'{"m.server": "matrix.example.net"}', {}),
        WellKnownResponse(302, b'{"m.server": "matrix.example.net"}', {}),
        ConnectionRefusedError("refused"),
        TimeoutError("timed out"),
    ],
)
def test_unusable_well_known_falls_through_to_srv_on_original_name(
    net: FakeNet, response: WellKnownResponse | Exception
) -> None:
    net.well_known["example.org"] = response
    net.srv["_matrix-fed._tcp.example.org"] = [SrvRecord(0, 0, 8600, "fed.example.org")]
    net.srv["_matrix-fed._tcp.matrix.example.net"] = [SrvRecord(0, 0, 1, "wrong.example")]
    got = resolve(net, "example.org")
    assert got == ResolvedServer("fed.example.org", 8600, "example.org", "example.org")


def test_well_known_extra_keys_and_content_type_are_ignored(net: FakeNet) -> None:
    net.well_known["example.org"] = WellKnownResponse(
        200,
        b'{"m.server": "matrix.example.net:8443", "other": {"x": 1}}',
        {"Content-Type": "text/plain"},
    )
    assert resolve(net, "example.org").host_header == "matrix.example.net:8443"


# /.well-known caching.


def fetch_intervals(
    net: FakeNet, resolver: ServerResolver, count: int = 1, name: str = "example.org"
) -> list[int]:
    """Resolve every minute and report the time (ms) between successive well-known fetches,
    starting with a resolve that must fetch."""
    before = len(net.fetches)
    resolve(net, name, resolver)
    assert len(net.fetches) == before + 1, "expected a fresh fetch"
    intervals: list[int] = []
    last = net.now_ms
    while len(intervals) < count:
        net.now_ms += MINUTE_MS
        fetched = len(net.fetches)
        resolve(net, name, resolver)
        if len(net.fetches) > fetched:
            intervals.append(net.now_ms - last)
            last = net.now_ms
        assert net.now_ms - last < 100 * HOUR_MS, "never refetched"
    return intervals


def cached_for(net: FakeNet, resolver: ServerResolver) -> int:
    return fetch_intervals(net, resolver)[0]


def test_valid_well_known_cached_24h_by_default(net: FakeNet) -> None:
    net.well_known["example.org"] = well_known("matrix.example.net:443")
    resolver = net.resolver()
    assert cached_for(net, resolver) == 24 * HOUR_MS


def test_well_known_cache_serves_result_without_refetch(net: FakeNet) -> None:
    net.well_known["example.org"] = well_known("matrix.example.net:443")
    resolver = net.resolver()
    first = resolve(net, "example.org", resolver)
    # Changed upstream, but the cached delegation still applies within its lifetime.
    net.well_known["example.org"] = well_known("other.example.net:443")
    net.now_ms += 23 * HOUR_MS
    assert resolve(net, "example.org", resolver) == first
    net.now_ms += 2 * HOUR_MS
    assert resolve(net, "example.org", resolver).host == "other.example.net"
    assert net.fetches == ["example.org", "example.org"]


@pytest.mark.parametrize(
    ("headers", "lifetime_ms"),
    [
        ({"Cache-Control": "max-age=3600"}, HOUR_MS),
        ({"cache-control": "public, MAX-AGE=7200"}, 2 * HOUR_MS),
        ({"Cache-Control": "max-age=10000000"}, 48 * HOUR_MS),
        ({"Cache-Control": "no-store"}, 5 * MINUTE_MS),
        ({"Cache-Control": "max-age=86400, no-cache"}, 5 * MINUTE_MS),
        ({"Cache-Control": "max-age=0"}, 5 * MINUTE_MS),
        (
            {"Date": "Mon, 01 Jan 2024 00:00:00 GMT", "Expires": "Mon, 01 Jan 2024 03:00:00 GMT"},
            3 * HOUR_MS,
        ),
        ({"Expires": "0"}, 5 * MINUTE_MS),
        (
            {
                "Cache-Control": "max-age=3600",
                "Date": "Mon, 01 Jan 2024 00:00:00 GMT",
                "Expires": "Mon, 01 Jan 2024 10:00:00 GMT",
            },
            HOUR_MS,
        ),
    ],
)
def test_well_known_cache_honours_headers(
    net: FakeNet, headers: dict[str, str], lifetime_ms: int
) -> None:
    net.well_known["example.org"] = well_known("matrix.example.net:443", headers)
    assert cached_for(net, net.resolver()) == lifetime_ms


def test_failed_well_known_cached_with_exponential_backoff(net: FakeNet) -> None:
    net.well_known["example.org"] = ConnectionRefusedError()
    resolver = net.resolver()
    lifetimes = fetch_intervals(net, resolver, 6)
    assert lifetimes == [
        5 * MINUTE_MS,
        10 * MINUTE_MS,
        20 * MINUTE_MS,
        40 * MINUTE_MS,
        HOUR_MS,
        HOUR_MS,
    ]


def test_not_found_well_known_is_cached_as_failure(net: FakeNet) -> None:
    resolver = net.resolver()
    resolve(net, "example.org", resolver)
    net.now_ms += 4 * MINUTE_MS
    resolve(net, "example.org", resolver)
    assert net.fetches == ["example.org"]
    # Each resolve still consults SRV (DNS has its own cache).
    assert net.srv_lookups.count("_matrix-fed._tcp.example.org") == 2


def test_success_after_failures_resets_backoff(net: FakeNet) -> None:
    net.well_known["example.org"] = ConnectionRefusedError()
    resolver = net.resolver()
    resolve(net, "example.org", resolver)  # failure 1: cached 5 min
    net.now_ms += 5 * MINUTE_MS
    resolve(net, "example.org", resolver)  # failure 2: cached 10 min
    net.well_known["example.org"] = well_known(
        "matrix.example.net:443", {"Cache-Control": "max-age=600"}
    )
    net.now_ms += 10 * MINUTE_MS
    assert resolve(net, "example.org", resolver).host == "matrix.example.net"
    assert len(net.fetches) == 3
    net.well_known["example.org"] = NOT_FOUND
    net.now_ms += 10 * MINUTE_MS
    assert resolve(net, "example.org", resolver).host == "example.org"
    assert len(net.fetches) == 4
    # The first failure after a success is cached for the shortest back-off again.
    net.now_ms += 5 * MINUTE_MS - 1
    resolve(net, "example.org", resolver)
    assert len(net.fetches) == 4
    net.now_ms += 1
    resolve(net, "example.org", resolver)
    assert len(net.fetches) == 5


def test_well_known_cache_is_bounded(net: FakeNet) -> None:
    resolver = net.resolver(cache_size=2)
    for host in ("a.example", "b.example", "c.example"):
        resolve(net, host, resolver)
    resolve(net, "c.example", resolver)
    assert net.fetches == ["a.example", "b.example", "c.example"]
    resolve(net, "a.example", resolver)  # evicted as least recently used
    assert net.fetches == ["a.example", "b.example", "c.example", "a.example"]


def test_concurrent_resolves_share_one_fetch(net: FakeNet) -> None:
    pending: defer.Deferred[WellKnownResponse] = defer.Deferred()
    calls: list[str] = []

    async def slow_fetch(hostname: str) -> WellKnownResponse:
        calls.append(hostname)
        return await pending

    resolver = ServerResolver(net.clock, slow_fetch, net.lookup)
    first = defer.ensureDeferred(resolver.resolve("example.org"))
    second = defer.ensureDeferred(resolver.resolve("example.org"))
    assert not first.called and not second.called
    pending.callback(well_known("matrix.example.net:443"))
    expected = ResolvedServer(
        "matrix.example.net", 443, "matrix.example.net:443", "matrix.example.net"
    )
    assert first.result == expected
    assert second.result == expected
    assert calls == ["example.org"]


def test_cancelled_fetch_is_not_cached(net: FakeNet) -> None:
    pending: defer.Deferred[WellKnownResponse] = defer.Deferred()
    calls: list[str] = []

    async def slow_fetch(hostname: str) -> WellKnownResponse:
        calls.append(hostname)
        if len(calls) == 1:
            return await pending
        return well_known("matrix.example.net:443")

    resolver = ServerResolver(net.clock, slow_fetch, net.lookup)
    first = defer.ensureDeferred(resolver.resolve("example.org"))
    waiter = defer.ensureDeferred(resolver.resolve("example.org"))
    first.cancel()
    errors: list[Failure] = []
    first.addErrback(errors.append)
    waiter.addErrback(errors.append)
    assert [f.check(defer.CancelledError) for f in errors] == [defer.CancelledError] * 2
    assert resolve(net, "example.org", resolver).host == "matrix.example.net"
    assert len(calls) == 2


def test_cancelled_waiter_does_not_disturb_the_shared_fetch(net: FakeNet) -> None:
    pending: defer.Deferred[WellKnownResponse] = defer.Deferred()

    async def slow_fetch(hostname: str) -> WellKnownResponse:
        return await pending

    resolver = ServerResolver(net.clock, slow_fetch, net.lookup)
    leader = defer.ensureDeferred(resolver.resolve("example.org"))
    waiter = defer.ensureDeferred(resolver.resolve("example.org"))
    waiter.cancel()
    errors: list[Failure] = []
    waiter.addErrback(errors.append)
    assert len(errors) == 1 and errors[0].check(defer.CancelledError)
    pending.callback(well_known("matrix.example.net:443"))
    assert leader.result == ResolvedServer(
        "matrix.example.net", 443, "matrix.example.net:443", "matrix.example.net"
    )


# SRV record choice.


class FixedRandom(random.Random):
    """randint answers scripted thresholds, so weighted choices are predictable."""

    def __init__(self, thresholds: list[int]) -> None:
        super().__init__(0)
        self.thresholds = thresholds
        self.asked: list[tuple[int, int]] = []

    def randint(self, a: int, b: int) -> int:
        self.asked.append((a, b))
        return self.thresholds.pop(0) if self.thresholds else a


def test_srv_lowest_priority_wins_regardless_of_weight() -> None:
    records = [
        SrvRecord(20, 100, 1, "late.example"),
        SrvRecord(10, 0, 2, "first.example"),
        SrvRecord(30, 5, 3, "last.example"),
    ]
    ordered = order_srv_records(records, random.Random(1))
    assert [r.target for r in ordered] == ["first.example", "late.example", "last.example"]


@pytest.mark.parametrize(
    ("threshold", "chosen"),
    [(0, "zero.example"), (1, "light.example"), (2, "heavy.example"), (4, "heavy.example")],
)
def test_srv_weighted_choice_follows_rfc2782(threshold: int, chosen: str) -> None:
    """Zero weight first, then running sums: light covers 1, heavy 2..4 (sum 4)."""
    records = [
        SrvRecord(5, 1, 1, "light.example"),
        SrvRecord(5, 3, 2, "heavy.example"),
        SrvRecord(5, 0, 3, "zero.example"),
    ]
    rng = FixedRandom([threshold])
    ordered = order_srv_records(records, rng)
    assert ordered[0].target == chosen
    assert rng.asked[0] == (0, 4)
    assert sorted(r.target for r in ordered) == ["heavy.example", "light.example", "zero.example"]


def test_srv_without_zero_weights_draws_from_one() -> None:
    """Drawing 0 would hand the first record an extra share beyond its weight."""
    records = [SrvRecord(0, 2, 1, "a.example"), SrvRecord(0, 2, 2, "b.example")]
    rng = FixedRandom([2])
    assert order_srv_records(records, rng)[0].target == "a.example"
    assert rng.asked == [(1, 4), (1, 2)]


def test_resolver_uses_injected_random_for_srv(net: FakeNet) -> None:
    net.srv["_matrix-fed._tcp.example.org"] = [
        SrvRecord(1, 1, 1001, "a.example"),
        SrvRecord(1, 1, 1002, "b.example"),
        SrvRecord(2, 50, 1003, "backup.example"),
    ]
    assert resolve(net, "example.org", net.resolver(rng=FixedRandom([2]))).port == 1002
    assert resolve(net, "example.org", net.resolver(rng=FixedRandom([1]))).port == 1001


def test_srv_weights_are_proportional() -> None:
    records = [SrvRecord(0, 1, 1, "light.example"), SrvRecord(0, 3, 2, "heavy.example")]
    rng = random.Random(42)
    picks = [order_srv_records(records, rng)[0].target for _ in range(4000)]
    share = picks.count("heavy.example") / len(picks)
    assert 0.70 < share < 0.80


def test_srv_all_zero_weights_spread_load() -> None:
    records = [SrvRecord(0, 0, 1, "a.example"), SrvRecord(0, 0, 2, "b.example")]
    rng = random.Random(7)
    picks = {order_srv_records(records, rng)[0].target for _ in range(50)}
    assert picks == {"a.example", "b.example"}


def test_srv_unusable_records_are_dropped() -> None:
    records = [
        SrvRecord(0, 0, 0, "noport.example"),
        SrvRecord(0, 0, 5, "."),
        SrvRecord(1, 0, 6, "ok"),
    ]
    assert order_srv_records(records, random.Random(0)) == [SrvRecord(1, 0, 6, "ok")]


# Server-name validation.


@pytest.mark.parametrize(
    "name",
    [
        "",
        ":8448",
        "example.com/path",
        "example.com:8448/path",
        "https://example.com",
        "user@example.com",
        "user:pass@example.com",
        "example.com:",
        "example.com:0",
        "example.com:65536",
        "example.com:123456",
        "example.com:-1",
        "example.com:abc",
        "example.com:\u0663",
        "example.com:80:90",
        "exa mple.com",
        "example.com\n",
        "ex_ample.com",
        "a..b",
        ".example.com",
        "example.com.",
        "b\u00fccher.example",
        "a" * 64 + ".example",
        ("a" * 60 + ".") * 5,
        "256.1.1.1",
        "1.2.3.999:80",
        "::1",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[::1]:65536",
        "[fe80::1%eth0]",
        "[example.com]",
        "[1.2.3.4]",
        "[]",
    ],
)
def test_invalid_server_names_are_rejected(net: FakeNet, name: str) -> None:
    with pytest.raises(InvalidServerName):
        parse_server_name(name)
    with pytest.raises(InvalidServerName):
        resolve(net, name)
    assert net.fetches == [] and net.srv_lookups == []


def test_invalid_server_name_is_a_value_error() -> None:
    assert issubclass(InvalidServerName, ValueError)


@pytest.mark.parametrize(
    ("name", "host", "port", "is_ip"),
    [
        ("matrix.org", "matrix.org", None, False),
        ("matrix.org:8888", "matrix.org", 8888, False),
        ("localhost", "localhost", None, False),
        ("1.2.3.4", "1.2.3.4", None, True),
        ("001.002.003.004:1234", "1.2.3.4", 1234, True),
        ("[1234:5678::abcd]", "1234:5678::abcd", None, True),
        ("[1234:5678::abcd]:5678", "1234:5678::abcd", 5678, True),
        ("example.com:65535", "example.com", 65535, False),
        ("xn--bcher-kva.example", "xn--bcher-kva.example", None, False),
    ],
)
def test_valid_server_names_parse(name: str, host: str, port: int | None, is_ip: bool) -> None:
    parsed = parse_server_name(name)
    assert (parsed.text, parsed.host, parsed.port, parsed.is_ip) == (name, host, port, is_ip)


# Cache header parsing.


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Cache-Control": "public"}, None),
        ({"Cache-Control": "max-age=60"}, 60_000),
        ({"Cache-Control": 'max-age="60"'}, 60_000),
        ({"Cache-Control": "max-age=abc"}, 0),
        ({"Cache-Control": "no-store, max-age=60"}, 0),
        ({"Expires": "garbage"}, 0),
        ({"Date": "Mon, 01 Jan 2024 00:00:00 GMT", "Expires": "Sun, 31 Dec 2023 00:00:00 GMT"}, 0),
        ({"Cache-Control": "public", "Expires": "Thu, 01 Jan 1970 00:01:00 GMT"}, 60_000 - 1000),
    ],
)
def test_cache_lifetime_from_headers(headers: dict[str, str], expected: int | None) -> None:
    assert cache_lifetime_ms(headers, now_ms=1000) == expected


# The real well-known fetcher's redirect handling.


class FakeHttps:
    def __init__(self, routes: dict[str, WellKnownResponse]) -> None:
        self.routes = routes
        self.requested: list[str] = []

    async def get(self, url: str) -> WellKnownResponse:
        self.requested.append(url)
        return self.routes.get(url, NOT_FOUND)


def redirect(location: str, status: int = 301) -> WellKnownResponse:
    return WellKnownResponse(status, b"", {"Location": location})


def test_fetcher_requests_the_well_known_url() -> None:
    https = FakeHttps({"https://example.org/.well-known/matrix/server": well_known("m.example:1")})
    response = run(make_well_known_fetcher(https.get)("example.org"))
    assert response == well_known("m.example:1")
    assert https.requested == ["https://example.org/.well-known/matrix/server"]


def test_fetcher_follows_absolute_and_relative_redirects() -> None:
    https = FakeHttps(
        {
            "https://example.org/.well-known/matrix/server": redirect(
                "https://www.example.org/wk", 302
            ),
            "https://www.example.org/wk": redirect("/final", 308),
            "https://www.example.org/final": well_known("m.example:1"),
        }
    )
    assert run(make_well_known_fetcher(https.get)("example.org")) == well_known("m.example:1")
    assert https.requested[-1] == "https://www.example.org/final"


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        (
            {
                "https://example.org/.well-known/matrix/server": redirect("https://a.example/"),
                "https://a.example/": redirect("https://example.org/.well-known/matrix/server"),
            },
            "loop",
        ),
        (
            {"https://example.org/.well-known/matrix/server": redirect("http://example.org/x")},
            "HTTPS",
        ),
        (
            {
                "https://example.org/.well-known/matrix/server": redirect("https://r.example/0"),
                **{
                    f"https://r.example/{i}": redirect(f"https://r.example/{i + 1}")
                    for i in range(10)
                },
            },
            "too many",
        ),
        (
            {
                "https://example.org/.well-known/matrix/server": WellKnownResponse(
                    200, b" " * 60_000 + b"{}", {}
                )
            },
            "too large",
        ),
    ],
)
def test_fetcher_refuses_bad_redirects_and_bodies(
    routes: dict[str, WellKnownResponse], message: str
) -> None:
    https = FakeHttps(routes)
    with pytest.raises(WellKnownFetchError, match=message):
        run(make_well_known_fetcher(https.get)("example.org"))
    assert len(https.requested) <= 6


def test_fetcher_returns_non_redirect_errors_and_redirects_without_location() -> None:
    https = FakeHttps(
        {"https://example.org/.well-known/matrix/server": WellKnownResponse(302, b"", {})}
    )
    assert run(make_well_known_fetcher(https.get)("example.org")).status == 302
    assert run(make_well_known_fetcher(https.get)("missing.org")).status == 404


def test_resolver_with_redirect_loop_falls_back_to_srv(net: FakeNet) -> None:
    https = FakeHttps(
        {"https://example.org/.well-known/matrix/server": redirect("/.well-known/matrix/server")}
    )
    resolver = ServerResolver(net.clock, make_well_known_fetcher(https.get), net.lookup)
    got = run(resolver.resolve("example.org"))
    assert got == ResolvedServer("example.org", 8448, "example.org", "example.org")
    assert net.srv_lookups == ["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"]


# The real SRV lookup's mapping of Twisted answers and errors.


def srv_answer(name: str, priority: int, weight: int, port: int, target: str) -> dns.RRHeader:
    return dns.RRHeader(
        name=name.encode(),
        type=dns.SRV,
        payload=cast(Any, dns.Record_SRV(priority, weight, port, target.encode())),
    )


def test_twisted_srv_lookup_maps_records(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "_matrix-fed._tcp.example.org"
    answers = [
        dns.RRHeader(
            name=name.encode(), type=dns.CNAME, payload=cast(Any, dns.Record_CNAME(b"x.example"))
        ),
        srv_answer(name, 10, 5, 8448, "fed.example.org"),
        srv_answer(name, 0, 0, 0, ""),
    ]
    asked: list[str] = []

    def lookup(query: str) -> defer.Deferred[Any]:
        asked.append(query)
        return defer.succeed((answers, [], []))

    monkeypatch.setattr(discovery.dns_client, "lookupService", lookup)
    assert run(twisted_srv_lookup(name)) == [
        SrvRecord(10, 5, 8448, "fed.example.org"),
        SrvRecord(0, 0, 0, "."),
    ]
    assert asked == [name]


def test_twisted_srv_lookup_nxdomain_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        discovery.dns_client, "lookupService", lambda q: defer.fail(DNSNameError(q))
    )
    assert run(twisted_srv_lookup("_matrix-fed._tcp.nowhere.example")) == []


def test_twisted_srv_lookup_other_errors_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        discovery.dns_client, "lookupService", lambda q: defer.fail(DNSServerError(q))
    )
    with pytest.raises(DNSServerError):
        run(twisted_srv_lookup("_matrix-fed._tcp.broken.example"))
