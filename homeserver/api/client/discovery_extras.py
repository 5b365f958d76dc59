"""User directory, search, spaces, reports, and the calls Element makes at start-up that
need only a simple, correct answer."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import (
    client_paths,
    client_v1_paths,
    optional,
    parse_json_object,
    query_bool,
    query_int,
    query_string,
    require,
)

if TYPE_CHECKING:
    from homeserver.server import HomeServer
    from homeserver.services.auth import Requester


def register(hs: HomeServer, router: Router) -> None:
    discovery = hs.discovery

    async def user_directory(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        term = require(body, "search_term", str)
        limit = optional(body, "limit", int, 10)
        if limit < 1:
            raise MatrixError(400, Codes.INVALID_PARAM, "limit must be positive")
        return 200, await discovery.search_users(requester, term, min(limit, 100))

    async def search(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, await discovery.search(
            requester, parse_json_object(request), query_string(request, "next_batch")
        )

    async def hierarchy(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, await space_hierarchy(hs, request, requester, room_id)

    async def report_event(request: MatrixRequest, room_id: str, event_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await discovery.report(requester, room_id, event_id, None, parse_json_object(request, True))
        return 200, {}

    async def report_room(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await discovery.report(requester, room_id, None, None, parse_json_object(request, True))
        return 200, {}

    async def report_user(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await discovery.report(requester, None, None, user_id, parse_json_object(request, True))
        return 200, {}

    async def turn_server(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        voip = hs.config.voip
        if not voip.turn_uris or not voip.turn_shared_secret:
            return 200, {}
        # The TURN REST API convention (coturn's use-auth-secret): time-limited credentials.
        lifetime = int(voip.turn_user_lifetime)
        username = f"{(hs.clock.time_msec() + lifetime) // 1000}:{requester.user_id}"
        mac = hmac.new(voip.turn_shared_secret.encode(), username.encode(), hashlib.sha1)
        return 200, {
            "username": username,
            "password": base64.b64encode(mac.digest()).decode(),
            "uris": voip.turn_uris,
            "ttl": lifetime // 1000,
        }

    async def protocols(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.get_user_by_req(request)
        return 200, {}

    async def auth_metadata(request: MatrixRequest) -> tuple[int, Any]:
        raise MatrixError(404, Codes.UNRECOGNIZED, "This server offers password login only")

    async def room_summary(request: MatrixRequest, room: str) -> tuple[int, Any]:
        requester = await hs.auth.get_optional_user(request)
        room_id = await hs.rooms.resolve_room(room)
        user_id = requester.user_id if requester else None
        return 200, await discovery.room_summary(user_id, room_id)

    async def mutual_rooms(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        other = query_string(request, "user_id")
        if other is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "user_id is required")
        if other == requester.user_id:
            raise MatrixError(400, Codes.INVALID_PARAM, "Ask about another user")
        return 200, {"joined": await discovery.mutual_rooms(requester.user_id, other)}

    async def msisdn_token(request: MatrixRequest) -> tuple[int, Any]:
        raise MatrixError(
            400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "Phone numbers are not supported here"
        )

    add = router.add
    add("GET", client_v1_paths("/room_summary/{room}"), room_summary, "room_summary")
    add("GET", "/_matrix/client/unstable/im.nheko.summary/rooms/{room}/summary", room_summary,
        "room_summary")  # fmt: skip
    add("GET", client_v1_paths("/mutual_rooms"), mutual_rooms, "mutual_rooms")
    add("GET", "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms", mutual_rooms,
        "mutual_rooms")  # fmt: skip
    for path in ("/register/msisdn/requestToken", "/account/3pid/msisdn/requestToken",
                 "/account/password/msisdn/requestToken"):  # fmt: skip
        add("POST", client_paths(path), msisdn_token, "msisdn_request_token")
    add("POST", client_paths("/user_directory/search"), user_directory, "user_directory")
    add("POST", client_paths("/search"), search, "search")
    add("GET", client_v1_paths("/rooms/{room_id}/hierarchy"), hierarchy, "hierarchy")
    add("POST", client_paths("/rooms/{room_id}/report/{event_id}"), report_event, "report")
    add("POST", client_paths("/rooms/{room_id}/report"), report_room, "report")
    add("POST", client_paths("/users/{user_id}/report"), report_user, "report")
    add("GET", client_paths("/voip/turnServer"), turn_server, "turn_server")
    add("GET", client_paths("/thirdparty/protocols"), protocols, "thirdparty_protocols")
    add("GET", client_v1_paths("/auth_metadata"), auth_metadata, "auth_metadata")


async def space_hierarchy(
    hs: HomeServer,
    request: MatrixRequest,
    requester: Requester,
    room_id: str,
    as_admin: bool = False,
) -> dict[str, Any]:
    """The hierarchy query parameters, read the same for the client and the admin API."""
    max_depth = request.query_arg("max_depth")
    return await hs.discovery.hierarchy(
        requester, room_id,
        query_int(request, "max_depth", 0) if max_depth is not None else None,
        query_bool(request, "suggested_only", False),
        query_int(request, "limit", 50, minimum=1, maximum=500),
        query_string(request, "from"), as_admin=as_admin,
    )  # fmt: skip
