"""Room servlets: create, membership, send, state, redact, history, members, aliases, directory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import bad_json, forbidden, invalid_param, not_found
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import (
    client_paths,
    client_v1_paths,
    optional,
    parse_json_object,
    query_bool,
    query_int,
    query_json_object,
    query_required,
    query_string,
    require,
)
from homeserver.services.room_access import EventFilter
from homeserver.streams import parse_position

if TYPE_CHECKING:
    from homeserver.server import HomeServer

MAX_ID_LENGTH = 255


def _check_type_and_key(event_type: str, state_key: str | None = None) -> None:
    if not event_type or len(event_type.encode()) > MAX_ID_LENGTH:
        raise invalid_param("Event type must be 1 to 255 bytes")
    if state_key is not None and len(state_key.encode()) > MAX_ID_LENGTH:
        raise invalid_param("State key must be at most 255 bytes")


def register(hs: HomeServer, router: Router) -> None:
    rooms = hs.rooms
    reads = hs.room_reads
    access = hs.room_access

    async def create_room(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, await rooms.create_room(requester, parse_json_object(request, allow_empty=True))

    def enter(membership: str) -> Any:
        """Joining and knocking: by room ID or alias, for oneself."""

        async def handler(request: MatrixRequest, room: str) -> tuple[int, Any]:
            requester = await hs.auth.get_user_by_req(request)
            body = parse_json_object(request, allow_empty=True)
            room_id, servers = await rooms.resolve_room_and_servers(room)
            servers += request.query_args("via") + request.query_args("server_name")
            await rooms.change_membership(
                requester, room_id, requester.user_id, membership,
                optional(body, "reason", str), servers=servers,
            )  # fmt: skip
            return 200, {"room_id": room_id}

        return handler

    join, knock = enter("join"), enter("knock")

    async def leave(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request, allow_empty=True)
        await rooms.change_membership(
            requester, room_id, requester.user_id, "leave", optional(body, "reason", str)
        )
        return 200, {}

    def membership_action(membership: str) -> Any:
        async def handler(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
            requester = await hs.auth.get_user_by_req(request)
            body = parse_json_object(request)
            target = require(body, "user_id", str)
            reason = optional(body, "reason", str)
            await rooms.change_membership(requester, room_id, target, membership, reason)
            return 200, {}

        return handler

    async def unban(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        target = require(body, "user_id", str)
        if await access.membership(target, room_id) != "ban":
            raise forbidden("That user is not banned")
        await rooms.change_membership(
            requester, room_id, target, "leave", optional(body, "reason", str)
        )
        return 200, {}

    async def forget(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await rooms.forget(requester, room_id)
        return 200, {}

    async def send(
        request: MatrixRequest, room_id: str, event_type: str, txn_id: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        _check_type_and_key(event_type)
        content = parse_json_object(request)
        shadow = rooms.shadow_event_id(requester)
        if shadow is not None:
            return 200, {"event_id": shadow}
        event = await rooms.send_message(requester, room_id, event_type, content, txn_id)
        return 200, {"event_id": event.event_id}

    async def put_state(
        request: MatrixRequest, room_id: str, event_type: str, state_key: str = ""
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        _check_type_and_key(event_type, state_key)
        content = parse_json_object(request)
        shadow = rooms.shadow_event_id(requester)
        if shadow is not None:
            return 200, {"event_id": shadow}
        event = await rooms.send_state(requester, room_id, event_type, state_key, content)
        return 200, {"event_id": event.event_id}

    async def get_state_event(
        request: MatrixRequest, room_id: str, event_type: str, state_key: str = ""
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        state = await reads.readable_state(requester, room_id)
        event = state.get((event_type, state_key))
        if event is None:
            raise not_found("State event not found")
        if query_string(request, "format", "content", ("content", "event")) == "event":
            return 200, (await access.serialize_many([event]))[0]
        serialized = (await access.serialize_many([event]))[0]
        return 200, serialized.get("content", {})

    async def get_state(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        state = await reads.readable_state(requester, room_id)
        return 200, await access.serialize_many(list(state.values()))

    async def redact(
        request: MatrixRequest, room_id: str, event_id: str, txn_id: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request, allow_empty=True)
        event = await rooms.redact(
            requester, room_id, event_id, optional(body, "reason", str), txn_id
        )
        return 200, {"event_id": event.event_id}

    async def messages(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        direction = query_string(request, "dir", "b", ("b", "f"))
        limit = query_int(request, "limit", 10, minimum=0, maximum=1000)
        filter_json = query_json_object(request, "filter")
        return 200, await reads.messages(
            requester,
            room_id,
            query_string(request, "from"),
            query_string(request, "to"),
            direction == "b",
            limit,
            EventFilter(filter_json),
        )

    async def context(request: MatrixRequest, room_id: str, event_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        limit = query_int(request, "limit", 10, minimum=0, maximum=100)
        return 200, await reads.context(requester, room_id, event_id, limit)

    async def get_event(request: MatrixRequest, room_id: str, event_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        event = await access.check_event_visible(requester.user_id, room_id, event_id)
        device = (requester.user_id, requester.device_id)
        return 200, (await access.serialize_many([event], device))[0]

    async def members(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        memberships = ("join", "invite", "knock", "leave", "ban")
        chunk = await reads.members(
            requester,
            room_id,
            query_string(request, "at"),
            query_string(request, "membership", None, memberships),
            query_string(request, "not_membership", None, memberships),
        )
        return 200, {"chunk": chunk}

    async def joined_members(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await hs.room_events.room_version(room_id)
        if await access.membership(requester.user_id, room_id) != "join":
            raise forbidden("You are not joined to this room")
        state = await hs.room_events.current_state_events(room_id)
        joined = {}
        for (event_type, user_id), event in state.items():
            content = event.data.get("content") or {}
            if event_type == "m.room.member" and content.get("membership") == "join":
                joined[user_id] = {
                    "display_name": content.get("displayname"),
                    "avatar_url": content.get("avatar_url"),
                }
        return 200, {"joined": joined}

    async def joined_rooms(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, {
            "joined_rooms": await hs.stores.events.get_rooms_for_user(requester.user_id, ["join"])
        }

    async def put_alias(request: MatrixRequest, alias: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        await rooms.create_alias(requester, alias, require(body, "room_id", str))
        return 200, {}

    async def get_alias(request: MatrixRequest, alias: str) -> tuple[int, Any]:
        found = await hs.stores.events.get_alias(alias)
        if found is None:
            raise not_found("Room alias not found")
        return 200, {"room_id": found[0], "servers": [hs.config.server_name]}

    async def delete_alias(request: MatrixRequest, alias: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await rooms.delete_alias(requester, alias)
        return 200, {}

    async def room_aliases(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await reads.readable_state(requester, room_id)
        return 200, {"aliases": await hs.stores.events.get_aliases_for_room(room_id)}

    async def get_directory_visibility(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        room = await hs.stores.events.get_room(room_id)
        if room is None:
            raise not_found("Unknown room")
        return 200, {"visibility": "public" if room[2] else "private"}

    async def put_directory_visibility(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await hs.room_events.room_version(room_id)
        body = parse_json_object(request)
        await rooms.set_directory_visibility(
            requester, room_id, optional(body, "visibility", str, "public")
        )
        return 200, {}

    async def public_rooms_get(request: MatrixRequest) -> tuple[int, Any]:
        server = query_string(request, "server")
        if server not in (None, hs.config.server_name):
            query = {"limit": str(query_int(request, "limit", 100, minimum=1, maximum=500))}
            since = query_string(request, "since")
            if since is not None:
                query["since"] = since
            return 200, await rooms.remote_public_rooms(str(server), query, None)
        return 200, await rooms.public_rooms(
            query_int(request, "limit", 100, minimum=1, maximum=500),
            query_string(request, "since"),
            None,
        )

    async def public_rooms_post(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.get_user_by_req(request)
        body = parse_json_object(request, allow_empty=True)
        search_filter = optional(body, "filter", dict, {})
        term = search_filter.get("generic_search_term")
        if term is not None and not isinstance(term, str):
            raise bad_json("filter.generic_search_term must be a string")
        room_types = search_filter.get("room_types")
        if room_types is not None and (
            not isinstance(room_types, list)
            or not all(t is None or isinstance(t, str) for t in room_types)
        ):
            raise bad_json("filter.room_types must be a list of strings or nulls")
        limit = optional(body, "limit", int, 100)
        if limit < 1:
            raise invalid_param("limit must be positive")
        server = query_string(request, "server")
        if server not in (None, hs.config.server_name):
            return 200, await rooms.remote_public_rooms(str(server), None, body)
        return 200, await rooms.public_rooms(
            min(limit, 500), optional(body, "since", str), term, room_types
        )

    async def timestamp_to_event(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        ts = parse_position(query_required(request, "ts"))
        if ts is None:
            raise invalid_param("ts must be a non-negative integer (milliseconds)")
        direction = query_string(request, "dir", None, ("f", "b"))
        if direction is None:
            raise invalid_param("dir must be 'f' or 'b'")
        await hs.room_events.room_version(room_id)
        event_id = await hs.stores.events.get_event_by_timestamp(room_id, ts, direction == "f")
        if event_id is None:
            raise not_found("No event found")
        event = await access.check_event_visible(requester.user_id, room_id, event_id)
        return 200, {"event_id": event.event_id, "origin_server_ts": event.data["origin_server_ts"]}

    async def upgrade(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        new_version = require(body, "new_version", str)
        return 200, {"replacement_room": await rooms.upgrade_room(requester, room_id, new_version)}

    add = router.add
    add("POST", client_paths("/rooms/{room_id}/upgrade"), upgrade, "room_upgrade")
    add("POST", client_paths("/createRoom"), create_room, "create_room")
    add("POST", client_paths("/join/{room}"), join, "join")
    add("POST", client_paths("/rooms/{room}/join"), join, "join")
    add("POST", client_paths("/knock/{room}"), knock, "knock")
    add("POST", client_paths("/rooms/{room_id}/leave"), leave, "leave")
    add("POST", client_paths("/rooms/{room_id}/invite"), membership_action("invite"), "invite")
    add("POST", client_paths("/rooms/{room_id}/kick"), membership_action("leave"), "kick")
    add("POST", client_paths("/rooms/{room_id}/ban"), membership_action("ban"), "ban")
    add("POST", client_paths("/rooms/{room_id}/unban"), unban, "unban")
    add("POST", client_paths("/rooms/{room_id}/forget"), forget, "forget")
    add("PUT", client_paths("/rooms/{room_id}/send/{event_type}/{txn_id}"), send, "send")
    state_paths = client_paths("/rooms/{room_id}/state/{event_type}/{state_key}")
    bare_state_paths = client_paths("/rooms/{room_id}/state/{event_type}") + client_paths(
        "/rooms/{room_id}/state/{event_type}/"
    )
    add("PUT", state_paths + bare_state_paths, put_state, "state_event")
    add("GET", state_paths + bare_state_paths, get_state_event, "state_event")
    add("GET", client_paths("/rooms/{room_id}/state"), get_state, "state")
    add("PUT", client_paths("/rooms/{room_id}/redact/{event_id}/{txn_id}"), redact, "redact")
    add("GET", client_paths("/rooms/{room_id}/messages"), messages, "messages")
    add("GET", client_paths("/rooms/{room_id}/context/{event_id}"), context, "context")
    add("GET", client_paths("/rooms/{room_id}/event/{event_id}"), get_event, "event")
    add("GET", client_paths("/rooms/{room_id}/members"), members, "members")
    add("GET", client_paths("/rooms/{room_id}/joined_members"), joined_members, "joined_members")
    add("GET", client_paths("/joined_rooms"), joined_rooms, "joined_rooms")
    add("PUT", client_paths("/directory/room/{alias}"), put_alias, "alias")
    add("GET", client_paths("/directory/room/{alias}"), get_alias, "alias")
    add("DELETE", client_paths("/directory/room/{alias}"), delete_alias, "alias")
    add("GET", client_paths("/rooms/{room_id}/aliases"), room_aliases, "room_aliases")
    directory_paths = client_paths("/directory/list/room/{room_id}")
    add("GET", directory_paths, get_directory_visibility, "directory_visibility")
    add("PUT", directory_paths, put_directory_visibility, "directory_visibility")
    add("GET", client_paths("/publicRooms"), public_rooms_get, "public_rooms")
    add("POST", client_paths("/publicRooms"), public_rooms_post, "public_rooms")
    add(
        "GET",
        client_v1_paths("/rooms/{room_id}/timestamp_to_event"),
        timestamp_to_event,
        "timestamp_to_event",
    )
    register_relations(hs, router)


def register_relations(hs: HomeServer, router: Router) -> None:
    reads = hs.relation_reads

    async def relations(
        request: MatrixRequest,
        room_id: str,
        event_id: str,
        rel_type: str | None = None,
        event_type: str | None = None,
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        direction = query_string(request, "dir", "b", ("b", "f"))
        return 200, await reads.relations(
            requester, room_id, event_id, rel_type, event_type,
            query_string(request, "from"), direction == "b",
            query_int(request, "limit", 50, minimum=1, maximum=1000),
            query_string(request, "to"), query_bool(request, "recurse", False),
        )  # fmt: skip

    async def threads(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        include = query_string(request, "include", "all", ("all", "participated"))
        return 200, await reads.threads(
            requester, room_id, include == "participated", query_string(request, "from"),
            query_int(request, "limit", 50, minimum=1, maximum=1000),
        )  # fmt: skip

    base = "/rooms/{room_id}/relations/{event_id}"
    for suffix in ("", "/{rel_type}", "/{rel_type}/{event_type}"):
        router.add("GET", client_v1_paths(base + suffix), relations, "relations")
    router.add("GET", client_v1_paths("/rooms/{room_id}/threads"), threads, "threads")
