"""Routing: a path finds the route registered first among those matching it, whatever
bucket each route lives in."""

from __future__ import annotations

from typing import Any

from homeserver.http.server import Router


async def _handler(request: Any) -> tuple[int, Any]:
    return 200, {}


def make(routes: list[tuple[str, str, str]]) -> Router:
    router = Router()
    for method, template, name in routes:
        router.add(method, template, _handler, name)
    return router


def test_first_registered_match_wins_across_buckets() -> None:
    router = make([
        ("GET", "/_matrix/client/v3/{anything}/x", "variable fifth, first"),
        ("GET", "/_matrix/client/v3/rooms/x", "literal fifth, later"),
        ("GET", "/_matrix/client/v3/rooms/{room_id}/state", "state"),
        ("GET", "/_matrix/client/v3/rooms/{room_id}/state/{event_type}", "state event"),
        ("PUT", "/_matrix/client/v3/rooms/{room_id}/state/{event_type}", "put state event"),
        ("GET", "/_matrix/client/v3/{anything}/y", "variable fifth, after the literal bucket"),
        ("GET", "/.well-known/matrix/client", "well-known"),
    ])  # fmt: skip
    assert router.match("GET", "/_matrix/client/v3/rooms/x")[0].name == "variable fifth, first"
    assert router.match("GET", "/_matrix/client/v3/rooms/y")[0].name == (
        "variable fifth, after the literal bucket"
    )
    assert router.match("GET", "/_matrix/client/v3/other/y")[0].name == (
        "variable fifth, after the literal bucket"
    )
    route, kwargs, _ = router.match("GET", "/_matrix/client/v3/rooms/%21r%3Ax/state/m.topic")
    assert route is not None and route.name == "state event"
    assert kwargs == {"room_id": "!r:x", "event_type": "m.topic"}
    assert router.match("GET", "/_matrix/client/v3/rooms/!r:x/state")[0].name == "state"
    assert router.match("GET", "/.well-known/matrix/client")[0].name == "well-known"


def test_other_methods_and_unknown_paths() -> None:
    router = make([
        ("GET", "/_matrix/client/v3/rooms/{room_id}/state/{event_type}", "get"),
        ("PUT", "/_matrix/client/v3/rooms/{room_id}/state/{event_type}", "put"),
    ])  # fmt: skip
    route, _, allowed = router.match("DELETE", "/_matrix/client/v3/rooms/!r:x/state/m.topic")
    assert route is None and sorted(allowed) == ["GET", "PUT"]
    assert router.match("GET", "/_matrix/client/v3/rooms/!r:x/state") == (None, {}, [])
    assert router.match("GET", "/_matrix/client/v3/rooms/!r:x/state/a/b") == (None, {}, [])
    assert router.match("GET", "/nothing") == (None, {}, [])
