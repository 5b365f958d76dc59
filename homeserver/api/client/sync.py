"""/sync and what feeds it from clients: filters, typing, receipts, read markers, tags."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, forbidden, not_found
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import (
    client_paths,
    optional,
    parse_json_object,
    parse_json_value,
    query_bool,
    query_int,
    query_string,
    require,
)
from homeserver.services.filters import SyncFilter
from homeserver.streams import SyncToken, parse_position
from rooms.sliding_sync import RequestError as SlidingSyncRequestError
from rooms.sliding_sync import parse_request as parse_sliding_sync_request

if TYPE_CHECKING:
    from homeserver.server import HomeServer

MAX_TAG_LENGTH = 255


def register(hs: HomeServer, router: Router) -> None:
    async def sync(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        since_text = query_string(request, "since")
        since = None
        if since_text is not None:
            try:
                since = SyncToken.parse(since_text)
            except ValueError:
                raise MatrixError(400, Codes.INVALID_PARAM, "Invalid 'since' token") from None
        set_presence = query_string(
            request, "set_presence", "online", ("online", "offline", "unavailable")
        )
        if set_presence != "offline":  # "offline" only means: do not mark me online
            assert set_presence is not None
            await hs.presence.set_state(requester.user_id, set_presence, keep_message=True)
        timeout = min(query_int(request, "timeout", 0), hs.config.rooms.max_sync_timeout_ms)
        full_state = query_bool(request, "full_state", False)
        filter_param = query_string(request, "filter")
        raw_filter: Any = None
        if filter_param is not None:
            if filter_param.lstrip().startswith("{"):
                raw_filter = parse_json_value(filter_param.encode())
            else:
                filter_id = parse_position(filter_param)
                if filter_id is None:
                    raise MatrixError(400, Codes.INVALID_PARAM, "filter is neither JSON nor an ID")
                raw_filter = await hs.stores.sync.get_filter(requester.user_id, filter_id)
                if raw_filter is None:
                    raise MatrixError(400, Codes.INVALID_PARAM, "Unknown filter ID")
        sync_filter = SyncFilter.parse(raw_filter)
        return 200, await hs.sync.sync(requester, since, timeout, full_state, sync_filter)

    def sliding_sync(stable: bool) -> Any:
        async def handler(request: MatrixRequest) -> tuple[int, Any]:
            requester = await hs.auth.get_user_by_req(request)
            body = parse_json_object(request, allow_empty=True)
            query_timeout = request.query_arg("timeout")
            try:
                parsed = parse_sliding_sync_request(
                    body, query_string(request, "pos"),
                    query_int(request, "timeout", 0) if query_timeout is not None else None,
                )  # fmt: skip
            except SlidingSyncRequestError as e:
                raise MatrixError(400, Codes.INVALID_PARAM, str(e)) from None
            return 200, await hs.sliding_sync.sync(requester, parsed, stable)

        return handler

    async def post_filter(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if requester.user_id != user_id:
            raise forbidden("Cannot create filters for other users")
        body = parse_json_object(request)
        SyncFilter.parse(body)
        return 200, {"filter_id": str(await hs.stores.sync.add_filter(user_id, body))}

    async def get_filter(request: MatrixRequest, user_id: str, filter_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if requester.user_id != user_id:
            raise forbidden("Cannot read other users' filters")
        found = None
        number = parse_position(filter_id)
        if number is not None:
            found = await hs.stores.sync.get_filter(user_id, number)
        if found is None:
            raise not_found("No such filter")
        return 200, found

    async def typing(request: MatrixRequest, room_id: str, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if requester.user_id != user_id:
            raise forbidden("Cannot set typing for other users")
        await hs.room_events.room_version(room_id)
        body = parse_json_object(request)
        is_typing = require(body, "typing", bool)
        timeout = optional(body, "timeout", int, 30_000)
        await hs.typing.set_typing(user_id, room_id, is_typing, timeout)
        return 200, {}

    async def receipt(
        request: MatrixRequest, room_id: str, receipt_type: str, event_id: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await hs.room_events.room_version(room_id)
        body = parse_json_object(request, allow_empty=True)
        thread_id = optional(body, "thread_id", str)
        if receipt_type == "m.fully_read":
            await _fully_read(requester.user_id, room_id, event_id)
        else:
            await hs.receipts.put_receipt(
                requester.user_id, room_id, receipt_type, event_id, thread_id
            )
        return 200, {}

    async def _fully_read(user_id: str, room_id: str, event_id: str) -> None:
        await hs.room_access.check_event_visible(user_id, room_id, event_id)
        await hs.account_data.write(user_id, room_id, "m.fully_read", {"event_id": event_id})

    async def read_markers(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await hs.room_events.room_version(room_id)
        body = parse_json_object(request)
        fully_read = optional(body, "m.fully_read", str)
        if fully_read:
            await _fully_read(requester.user_id, room_id, fully_read)
        for receipt_type in ("m.read", "m.read.private"):
            event_id = optional(body, receipt_type, str)
            if event_id:
                await hs.receipts.put_receipt(
                    requester.user_id, room_id, receipt_type, event_id, None
                )
        return 200, {}

    async def _tags(user_id: str, room_id: str) -> dict[str, Any]:
        content = await hs.stores.account_data.get(user_id, room_id, "m.tag")
        tags = (content or {}).get("tags")
        return dict(tags) if isinstance(tags, dict) else {}

    async def get_tags(request: MatrixRequest, user_id: str, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if requester.user_id != user_id:
            raise forbidden("Cannot read other users' tags")
        return 200, {"tags": await _tags(user_id, room_id)}

    async def put_tag(
        request: MatrixRequest, user_id: str, room_id: str, tag: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if requester.user_id != user_id:
            raise forbidden("Cannot change other users' tags")
        if len(tag.encode()) > MAX_TAG_LENGTH:
            raise MatrixError(400, Codes.INVALID_PARAM, "Tag is too long")
        body = parse_json_object(request)
        order = body.get("order")
        if order is not None and (not isinstance(order, int | float) or isinstance(order, bool)):
            raise MatrixError(400, Codes.BAD_JSON, "order must be a number")
        tags = await _tags(user_id, room_id)
        tags[tag] = body
        await hs.account_data.write(user_id, room_id, "m.tag", {"tags": tags})
        return 200, {}

    async def delete_tag(
        request: MatrixRequest, user_id: str, room_id: str, tag: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if requester.user_id != user_id:
            raise forbidden("Cannot change other users' tags")
        tags = await _tags(user_id, room_id)
        if tags.pop(tag, None) is not None:
            await hs.account_data.write(user_id, room_id, "m.tag", {"tags": tags})
        return 200, {}

    async def get_presence(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, await hs.presence.get(requester.user_id, user_id)

    async def put_presence(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if requester.user_id != user_id:
            raise forbidden("Cannot set another user's presence")
        hs.presence._require_enabled()
        body = parse_json_object(request)
        await hs.presence.set_state(
            user_id, require(body, "presence", str), optional(body, "status_msg", str)
        )
        return 200, {}

    add = router.add
    add("GET", client_paths("/sync"), sync, "sync")
    add("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
        sliding_sync(stable=False), "sliding_sync")  # fmt: skip
    add("POST", "/_matrix/client/v4/sync", sliding_sync(stable=True), "sliding_sync")
    add("GET", client_paths("/presence/{user_id}/status"), get_presence, "presence")
    add("PUT", client_paths("/presence/{user_id}/status"), put_presence, "presence")
    add("POST", client_paths("/user/{user_id}/filter"), post_filter, "filter")
    add("GET", client_paths("/user/{user_id}/filter/{filter_id}"), get_filter, "filter")
    add("PUT", client_paths("/rooms/{room_id}/typing/{user_id}"), typing, "typing")
    add(
        "POST",
        client_paths("/rooms/{room_id}/receipt/{receipt_type}/{event_id}"),
        receipt,
        "receipt",
    )
    add("POST", client_paths("/rooms/{room_id}/read_markers"), read_markers, "read_markers")
    tags_path = "/user/{user_id}/rooms/{room_id}/tags"
    add("GET", client_paths(tags_path), get_tags, "tags")
    add("PUT", client_paths(tags_path + "/{tag}"), put_tag, "tag")
    add("DELETE", client_paths(tags_path + "/{tag}"), delete_tag, "tag")
