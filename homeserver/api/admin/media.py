"""Admin removal of media (Synapse's path), which deletes the files as well as the record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, not_found
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import query_bool, query_int, query_ts

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
        deleted = await hs.media.delete_user_media(user_id)
        return 200, {"deleted_media": deleted, "total": len(deleted)}

    async def quarantine(
        request: MatrixRequest, server_name: str, media_id: str
    ) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        by = None if b"/unquarantine/" in request.path else requester.user_id
        if server_name == hs.config.server_name:
            await hs.media.store.quarantine([media_id], by)
        else:
            await hs.media.store.quarantine_remote(server_name, media_id, by)
        details = {"media": f"{server_name}/{media_id}", "on": bool(by)}
        await hs.admin.audit(request, requester, "media.quarantine", details=details)
        return 200, {}

    async def quarantine_room(request: MatrixRequest, room_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        listing = await hs.admin.room_media(room_id)
        local = [uri.rsplit("/", 1)[1] for uri in listing["local"]]
        count = await hs.media.store.quarantine(local, requester.user_id)
        for uri in listing["remote"]:
            server_name, media_id = uri[len("mxc://") :].split("/", 1)
            count += await hs.media.store.quarantine_remote(server_name, media_id,
                                                            requester.user_id)  # fmt: skip
        await hs.admin.audit(request, requester, "media.quarantine_room", room_id=room_id)
        return 200, {"num_quarantined": count}

    async def quarantine_user(request: MatrixRequest, user_id: str) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        media = await hs.media.store.user_media_ids(user_id)
        count = await hs.media.store.quarantine(media, requester.user_id)
        await hs.admin.audit(request, requester, "media.quarantine_user", user_id)
        return 200, {"num_quarantined": count}

    async def protect(request: MatrixRequest, media_id: str) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        await hs.media.store.set_protected(media_id, b"/unprotect/" not in request.path)
        return 200, {}

    async def delete_old(request: MatrixRequest, server_name: str | None = None) -> tuple[int, Any]:
        requester = await hs.auth.require_admin(request)
        if server_name is not None and server_name != hs.config.server_name:
            raise MatrixError(400, Codes.INVALID_PARAM, "Only local media can be deleted")
        before = query_ts(request, "before_ts", required=True)
        size_gt = query_int(request, "size_gt", 0)
        keep_profiles = query_bool(request, "keep_profiles", True)
        candidates = await hs.media.store.old_media(before, size_gt)
        if keep_profiles:
            avatars = await hs.stores.profiles.avatar_media_ids(hs.config.server_name)
            candidates = [m for m in candidates if m not in avatars]
        deleted = [m for m in candidates if await hs.media.delete(m)]
        await hs.admin.audit(request, requester, "media.delete_old",
                             details={"before_ts": before, "count": len(deleted)})  # fmt: skip
        return 200, {"deleted_media": deleted, "total": len(deleted)}

    async def purge_cache(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.require_admin(request)
        before = query_ts(request, "before_ts", required=True)
        deleted = await hs.media.purge_remote_cache(before)
        return 200, {"deleted": deleted, "total": deleted}

    a = "/_synapse/admin/v1"
    router.add("POST", f"{a}/media/quarantine/{{server_name}}/{{media_id}}", quarantine,
               "admin_media_quarantine")  # fmt: skip
    router.add("POST", f"{a}/media/unquarantine/{{server_name}}/{{media_id}}", quarantine,
               "admin_media_quarantine")  # fmt: skip
    router.add("POST", f"{a}/room/{{room_id}}/media/quarantine", quarantine_room,
               "admin_media_quarantine")  # fmt: skip
    router.add("POST", f"{a}/user/{{user_id}}/media/quarantine", quarantine_user,
               "admin_media_quarantine")  # fmt: skip
    router.add("POST", f"{a}/media/protect/{{media_id}}", protect, "admin_media_protect")
    router.add("POST", f"{a}/media/unprotect/{{media_id}}", protect, "admin_media_protect")
    router.add("POST", f"{a}/media/delete", delete_old, "admin_media_delete")
    router.add("POST", f"{a}/media/{{server_name}}/delete", delete_old, "admin_media_delete")
    router.add("POST", f"{a}/purge_media_cache", purge_cache, "admin_purge_media_cache")
    router.add(
        "DELETE", "/_synapse/admin/v1/media/{server_name}/{media_id}", delete_media, "admin_media"
    )
    router.add(
        "DELETE", "/_synapse/admin/v1/users/{user_id}/media", delete_user_media, "admin_media"
    )
