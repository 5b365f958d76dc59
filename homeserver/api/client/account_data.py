"""Account data: global and per-room JSON owned by the user."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import invalid_param
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import client_paths, parse_json_object

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def _check_room_id(room_id: str) -> None:
    if not room_id.startswith("!") or len(room_id) > 255:
        raise invalid_param(f"{room_id!r} is not a room ID")


def register(hs: HomeServer, router: Router) -> None:
    async def get_global(request: MatrixRequest, user_id: str, data_type: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, await hs.account_data.get(requester.user_id, user_id, "", data_type)

    async def put_global(request: MatrixRequest, user_id: str, data_type: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        content = parse_json_object(request)
        await hs.account_data.put(requester.user_id, user_id, "", data_type, content)
        return 200, {}

    async def get_room(
        request: MatrixRequest, user_id: str, room_id: str, data_type: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        _check_room_id(room_id)
        return 200, await hs.account_data.get(requester.user_id, user_id, room_id, data_type)

    async def put_room(
        request: MatrixRequest, user_id: str, room_id: str, data_type: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        _check_room_id(room_id)
        content = parse_json_object(request)
        await hs.account_data.put(requester.user_id, user_id, room_id, data_type, content)
        return 200, {}

    global_path = client_paths("/user/{user_id}/account_data/{data_type}")
    room_path = client_paths("/user/{user_id}/rooms/{room_id}/account_data/{data_type}")
    router.add("GET", global_path, get_global, "account_data")
    router.add("PUT", global_path, put_global, "account_data")
    router.add("GET", room_path, get_room, "room_account_data")
    router.add("PUT", room_path, put_room, "room_account_data")
