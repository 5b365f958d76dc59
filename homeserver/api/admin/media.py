"""Admin removal of media (Synapse's path), which deletes the files as well as the record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import not_found
from homeserver.http.server import MatrixRequest, Router

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(hs: HomeServer, router: Router) -> None:
    async def delete_media(
        request: MatrixRequest, server_name: str, media_id: str
    ) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        if server_name != hs.config.server_name or not await hs.media.delete(media_id):
            raise not_found("Unknown media")
        return 200, {"deleted_media": [media_id], "total": 1}

    async def delete_user_media(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        count = await hs.media.delete_user_media(user_id)
        return 200, {"total": count}

    router.add(
        "DELETE", "/_synapse/admin/v1/media/{server_name}/{media_id}", delete_media, "admin_media"
    )
    router.add(
        "DELETE", "/_synapse/admin/v1/users/{user_id}/media", delete_user_media, "admin_media"
    )
