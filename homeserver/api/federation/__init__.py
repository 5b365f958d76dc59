"""Server-server API servlets: /_matrix/key/* (unauthenticated) and /_matrix/federation/*
(every request X-Matrix signed). Thin: authenticate, parse, call the federation services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, bad_json, not_found
from homeserver.federation.media import multipart_answer
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import parse_json_object
from homeserver.services.media import content_headers
from homeserver.streams import parse_position

if TYPE_CHECKING:
    from homeserver.server import HomeServer

FED = "/_matrix/federation"
SERVER_VERSION = "0.1.0"


def register_federation_servlets(hs: HomeServer, router: Router) -> None:
    keyring = hs.keyring
    auth = hs.federation_auth
    reads = hs.federation_reads
    membership = hs.federation_membership

    # Keys

    async def server_keys(request: MatrixRequest) -> tuple[int, Any]:
        return 200, keyring.published_keys()

    async def query_keys_get(request: MatrixRequest, server_name: str) -> tuple[int, Any]:
        minimum = parse_position(request.query_arg("minimum_valid_until_ts") or "0") or 0
        return 200, {"server_keys": await keyring.notary_response(server_name, minimum)}

    async def query_keys_post(request: MatrixRequest) -> tuple[int, Any]:
        body = parse_json_object(request)
        wanted = body.get("server_keys")
        if not isinstance(wanted, dict):
            raise bad_json("server_keys must be an object")
        responses = []
        for server_name, keys in list(wanted.items())[:100]:
            minimum = 0
            if isinstance(keys, dict):
                for criteria in keys.values():
                    if isinstance(criteria, dict):
                        value = criteria.get("minimum_valid_until_ts")
                        if isinstance(value, int) and not isinstance(value, bool):
                            minimum = max(minimum, value)
            responses += await keyring.notary_response(str(server_name), minimum)
        return 200, {"server_keys": responses}

    router.add("GET", "/_matrix/key/v2/server", server_keys, "fed_key_server")
    router.add("GET", "/_matrix/key/v2/query/{server_name}", query_keys_get, "fed_key_query")
    router.add("POST", "/_matrix/key/v2/query", query_keys_post, "fed_key_query")

    # Unauthenticated

    async def version(request: MatrixRequest) -> tuple[int, Any]:
        return 200, {"server": {"name": "homeserver", "version": SERVER_VERSION}}

    async def openid_userinfo(request: MatrixRequest) -> tuple[int, Any]:
        # Authenticated by the OpenID token itself (asked by widgets and integration
        # managers, not by homeservers), so no X-Matrix signature.
        token = request.query_arg("access_token")
        if not token:
            authorization = request.header("Authorization") or ""
            token = authorization[7:] if authorization.startswith("Bearer ") else None
        user_id = await hs.accounts.openid_user(token) if token else None
        if user_id is None:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Invalid or expired OpenID token")
        return 200, {"sub": user_id}

    router.add("GET", f"{FED}/v1/version", version, "fed_version")
    router.add("GET", f"{FED}/v1/openid/userinfo", openid_userinfo, "fed_openid_userinfo")

    # Transactions

    async def send_transaction(request: MatrixRequest, txn_id: str) -> tuple[int, Any]:
        origin, body = await auth.authenticate(request)
        if isinstance(body, dict) and body.get("origin", origin) != origin:
            raise bad_json("The transaction's origin is not the sender")
        return 200, await hs.federation_receiver.on_transaction(origin, txn_id, body)

    router.add("PUT", f"{FED}/v1/send/{{txn_id}}", send_transaction, "fed_send")

    # Membership

    async def make_join(request: MatrixRequest, room_id: str, user_id: str) -> tuple[int, Any]:
        origin, _ = await auth.authenticate(request)
        versions = request.query_args("ver") or ["1"]
        return 200, await membership.make_membership(origin, room_id, user_id, "join", versions)

    async def send_join(request: MatrixRequest, room_id: str, event_id: str) -> tuple[int, Any]:
        origin, body = await auth.authenticate(request)
        stored, event = await membership.send_membership(origin, room_id, event_id, "join", body)
        return 200, await membership.join_answer(stored, event)

    async def send_join_v1(request: MatrixRequest, room_id: str, event_id: str) -> tuple[int, Any]:
        code, answer = await send_join(request, room_id, event_id)
        return code, [200, answer]

    async def make_leave(request: MatrixRequest, room_id: str, user_id: str) -> tuple[int, Any]:
        origin, _ = await auth.authenticate(request)
        return 200, await membership.make_membership(origin, room_id, user_id, "leave", [])

    async def send_leave(request: MatrixRequest, room_id: str, event_id: str) -> tuple[int, Any]:
        origin, body = await auth.authenticate(request)
        await membership.send_membership(origin, room_id, event_id, "leave", body)
        return 200, {}

    async def send_leave_v1(request: MatrixRequest, room_id: str, event_id: str) -> tuple[int, Any]:
        await send_leave(request, room_id, event_id)
        return 200, [200, {}]

    async def make_knock(request: MatrixRequest, room_id: str, user_id: str) -> tuple[int, Any]:
        origin, _ = await auth.authenticate(request)
        versions = request.query_args("ver") or ["1"]
        return 200, await membership.make_membership(origin, room_id, user_id, "knock", versions)

    async def send_knock(request: MatrixRequest, room_id: str, event_id: str) -> tuple[int, Any]:
        origin, body = await auth.authenticate(request)
        _, event = await membership.send_membership(origin, room_id, event_id, "knock", body)
        stripped = await hs.sync.stripped_state(room_id, str(event["state_key"]))
        return 200, {"knock_room_state": stripped}

    async def invite(request: MatrixRequest, room_id: str, event_id: str) -> tuple[int, Any]:
        origin, body = await auth.authenticate(request)
        return 200, await membership.on_invite(origin, room_id, event_id, body)

    router.add("GET", f"{FED}/v1/make_join/{{room_id}}/{{user_id}}", make_join, "fed_make_join")
    router.add("PUT", f"{FED}/v2/send_join/{{room_id}}/{{event_id}}", send_join, "fed_send_join")
    router.add("PUT", f"{FED}/v1/send_join/{{room_id}}/{{event_id}}", send_join_v1,
               "fed_send_join")  # fmt: skip
    router.add("GET", f"{FED}/v1/make_leave/{{room_id}}/{{user_id}}", make_leave,
               "fed_make_leave")  # fmt: skip
    router.add("PUT", f"{FED}/v2/send_leave/{{room_id}}/{{event_id}}", send_leave,
               "fed_send_leave")  # fmt: skip
    router.add("PUT", f"{FED}/v1/send_leave/{{room_id}}/{{event_id}}", send_leave_v1,
               "fed_send_leave")  # fmt: skip
    router.add("PUT", f"{FED}/v2/invite/{{room_id}}/{{event_id}}", invite, "fed_invite")
    router.add("GET", f"{FED}/v1/make_knock/{{room_id}}/{{user_id}}", make_knock,
               "fed_make_knock")  # fmt: skip
    router.add("PUT", f"{FED}/v1/send_knock/{{room_id}}/{{event_id}}", send_knock,
               "fed_send_knock")  # fmt: skip

    # Reads

    async def event(request: MatrixRequest, event_id: str) -> tuple[int, Any]:
        origin, _ = await auth.authenticate(request)
        return 200, await reads.event(origin, event_id)

    async def state_ids(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        origin, _ = await auth.authenticate(request)
        event_id = request.query_arg("event_id")
        if event_id is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing event_id")
        return 200, await reads.state_ids(origin, room_id, event_id)

    async def state(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        origin, _ = await auth.authenticate(request)
        event_id = request.query_arg("event_id")
        if event_id is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing event_id")
        return 200, await reads.state(origin, room_id, event_id)

    async def event_auth(request: MatrixRequest, room_id: str, event_id: str) -> tuple[int, Any]:
        origin, _ = await auth.authenticate(request)
        return 200, await reads.event_auth(origin, room_id, event_id)

    async def backfill(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        origin, _ = await auth.authenticate(request)
        limit = parse_position(request.query_arg("limit") or "10")
        if limit is None:
            raise MatrixError(400, Codes.INVALID_PARAM, "limit must be a non-negative integer")
        return 200, await reads.backfill(origin, room_id, request.query_args("v"), limit)

    async def missing_events(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        origin, body = await auth.authenticate(request)
        return 200, await reads.missing_events(origin, room_id, body)

    async def query_profile(request: MatrixRequest) -> tuple[int, Any]:
        await auth.authenticate(request)
        user_id = request.query_arg("user_id")
        if user_id is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing user_id")
        return 200, await reads.profile(user_id, request.query_arg("field"))

    async def query_directory(request: MatrixRequest) -> tuple[int, Any]:
        await auth.authenticate(request)
        alias = request.query_arg("room_alias")
        if alias is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing room_alias")
        return 200, await reads.directory(alias)

    async def unknown_query(request: MatrixRequest, query_type: str) -> tuple[int, Any]:
        await auth.authenticate(request)
        raise not_found(f"Unknown query type {query_type}")

    async def public_rooms_get(request: MatrixRequest) -> tuple[int, Any]:
        await auth.authenticate(request)
        limit = parse_position(request.query_arg("limit") or "100") or 100
        return 200, await hs.rooms.public_rooms(min(limit, 500), request.query_arg("since"), None)

    async def public_rooms_post(request: MatrixRequest) -> tuple[int, Any]:
        _, body = await auth.authenticate(request)
        if not isinstance(body, dict):
            raise bad_json("Body must be an object")
        given = body.get("filter")
        search: dict[str, Any] = given if isinstance(given, dict) else {}
        term, types = search.get("generic_search_term"), search.get("room_types")
        limit = body.get("limit", 100)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise bad_json("limit must be a positive integer")
        since = body.get("since")
        return 200, await hs.rooms.public_rooms(
            min(limit, 500),
            since if isinstance(since, str) else None,
            term if isinstance(term, str) else None,
            types if isinstance(types, list) else None,
        )

    async def hierarchy(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        origin, _ = await auth.authenticate(request)
        suggested = request.query_arg("suggested_only") == "true"
        return 200, await hs.discovery.federation_hierarchy(origin, room_id, suggested)

    async def timestamp_to_event(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        origin, _ = await auth.authenticate(request)
        ts = parse_position(request.query_arg("ts") or "")
        direction = request.query_arg("dir")
        if ts is None or direction not in ("f", "b"):
            raise MatrixError(400, Codes.INVALID_PARAM, "ts and dir=f|b are required")
        return 200, await reads.timestamp_to_event(origin, room_id, ts, direction == "f")

    async def user_devices(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        origin, _ = await auth.authenticate(request)
        if not hs.accounts.is_local(user_id) or await hs.stores.users.get_user(user_id) is None:
            raise not_found("Not a user of this server")
        return 200, await hs.federation_e2ee.user_devices(origin, user_id)

    async def user_keys_query(request: MatrixRequest) -> tuple[int, Any]:
        _, body = await auth.authenticate(request)
        wanted = body.get("device_keys") if isinstance(body, dict) else None
        if not isinstance(wanted, dict):
            raise bad_json("device_keys must be an object")
        local = {
            u: d if isinstance(d, list) else []
            for u, d in wanted.items()
            if isinstance(u, str) and hs.accounts.is_local(u)
        }
        answer = await hs.e2ee.local_keys(local, "")
        answer.pop("user_signing_keys", None)  # never to another server
        return 200, answer

    async def user_keys_claim(request: MatrixRequest) -> tuple[int, Any]:
        _, body = await auth.authenticate(request)
        if not isinstance(body, dict):
            raise bad_json("Body must be an object")
        answer = await hs.e2ee.claim_keys(body, local_only=True)
        return 200, {"one_time_keys": answer["one_time_keys"]}

    async def media_download(request: MatrixRequest, media_id: str) -> tuple[int, Any]:
        await auth.authenticate(request)
        info, data = await hs.media.download(hs.config.server_name, media_id, True)
        # The type as uploaded: the asking server applies its own serving rules.
        disposition = content_headers(info.content_type, info.upload_name)["Content-Disposition"]
        content_type, body = multipart_answer(info.content_type, disposition, data)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return 200, body

    async def media_thumbnail(request: MatrixRequest, media_id: str) -> tuple[int, Any]:
        await auth.authenticate(request)
        width = parse_position(request.query_arg("width") or "")
        height = parse_position(request.query_arg("height") or "")
        method = request.query_arg("method") or "scale"
        if not width or not height or method not in ("crop", "scale"):
            raise MatrixError(400, Codes.INVALID_PARAM, "width, height and method are needed")
        thumb_type, data = await hs.media.thumbnail(
            hs.config.server_name, media_id, width, height, method, True
        )
        content_type, body = multipart_answer(thumb_type, None, data)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return 200, body

    router.add("GET", f"{FED}/v1/media/download/{{media_id}}", media_download,
               "fed_media_download")  # fmt: skip
    router.add("GET", f"{FED}/v1/media/thumbnail/{{media_id}}", media_thumbnail,
               "fed_media_thumbnail")  # fmt: skip
    router.add("GET", f"{FED}/v1/user/devices/{{user_id}}", user_devices, "fed_user_devices")
    router.add("POST", f"{FED}/v1/user/keys/query", user_keys_query, "fed_user_keys_query")
    router.add("POST", f"{FED}/v1/user/keys/claim", user_keys_claim, "fed_user_keys_claim")
    router.add("GET", f"{FED}/v1/hierarchy/{{room_id}}", hierarchy, "fed_hierarchy")
    router.add("GET", f"{FED}/v1/timestamp_to_event/{{room_id}}", timestamp_to_event,
               "fed_timestamp_to_event")  # fmt: skip
    router.add("GET", f"{FED}/v1/publicRooms", public_rooms_get, "fed_public_rooms")
    router.add("POST", f"{FED}/v1/publicRooms", public_rooms_post, "fed_public_rooms")
    router.add("GET", f"{FED}/v1/event/{{event_id}}", event, "fed_event")
    router.add("GET", f"{FED}/v1/state_ids/{{room_id}}", state_ids, "fed_state_ids")
    router.add("GET", f"{FED}/v1/state/{{room_id}}", state, "fed_state")
    router.add("GET", f"{FED}/v1/event_auth/{{room_id}}/{{event_id}}", event_auth,
               "fed_event_auth")  # fmt: skip
    router.add("GET", f"{FED}/v1/backfill/{{room_id}}", backfill, "fed_backfill")
    router.add("POST", f"{FED}/v1/get_missing_events/{{room_id}}", missing_events,
               "fed_get_missing_events")  # fmt: skip
    router.add("GET", f"{FED}/v1/query/profile", query_profile, "fed_query_profile")
    router.add("GET", f"{FED}/v1/query/directory", query_directory, "fed_query_directory")
    router.add("GET", f"{FED}/v1/query/{{query_type}}", unknown_query, "fed_query")
