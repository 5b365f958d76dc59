"""A user's own copy of their data: ask for an export, follow it, download it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.http.server import FileBody, MatrixRequest, Router

if TYPE_CHECKING:
    from homeserver.server import HomeServer

# Our own client-API extensions live under this namespace.
NAMESPACE = "/_matrix/client/unstable/org.homeserver"


def register(hs: HomeServer, router: Router) -> None:
    exports = hs.exports

    async def request_export(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        hs.ratelimiter.check("data_export", requester.user_id)
        export_id = await exports.request(requester.user_id, requester.user_id)
        return 200, {"export_id": export_id}

    async def export_status(request: MatrixRequest, export_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        return 200, await exports.status(export_id, requester.user_id, requester.user_id)

    async def download(request: MatrixRequest, export_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        path, name = await exports.finished_file(export_id, requester.user_id, requester.user_id)
        return 200, FileBody(path, "application/zip", name)

    router.add("POST", f"{NAMESPACE}/export", request_export, "data_export")
    router.add("GET", f"{NAMESPACE}/export/{{export_id}}", export_status, "data_export")
    router.add("GET", f"{NAMESPACE}/export/{{export_id}}/download", download, "data_export")
