"""Profiles: public display names, avatars and extended fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import missing_param
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import client_paths, parse_json_object

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(hs: HomeServer, router: Router) -> None:
    async def authorise_lookup(request: MatrixRequest) -> None:
        if hs.config.require_auth_for_profile_requests:
            await hs.auth.get_user_by_req(request)

    async def get_profile(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        await authorise_lookup(request)
        return 200, await hs.profiles.get_profile(user_id)

    async def get_field(request: MatrixRequest, user_id: str, key: str) -> tuple[int, Any]:
        await authorise_lookup(request)
        return 200, {key: await hs.profiles.get_field(user_id, key)}

    async def put_field(request: MatrixRequest, user_id: str, key: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        if key not in body:
            raise missing_param(key)
        await hs.profiles.set_field(requester.user_id, user_id, key, body[key])
        return 200, {}

    async def delete_field(request: MatrixRequest, user_id: str, key: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        await hs.profiles.delete_field(requester.user_id, user_id, key)
        return 200, {}

    router.add("GET", client_paths("/profile/{user_id}"), get_profile, "profile")
    router.add("GET", client_paths("/profile/{user_id}/{key}"), get_field, "profile_field")
    router.add("PUT", client_paths("/profile/{user_id}/{key}"), put_field, "profile_field")
    router.add("DELETE", client_paths("/profile/{user_id}/{key}"), delete_field, "profile_field")
