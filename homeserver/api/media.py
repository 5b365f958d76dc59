"""Media servlets: uploads, authenticated downloads and thumbnails (/_matrix/client/v1/media),
and the legacy /_matrix/media/v3 endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import query_int, query_string
from homeserver.services.media import content_headers

if TYPE_CHECKING:
    from homeserver.server import HomeServer

LEGACY = "/_matrix/media/v3"
AUTHED = "/_matrix/client/v1/media"


def register(hs: HomeServer, router: Router) -> None:
    media = hs.media

    def body_bytes(request: MatrixRequest) -> bytes:
        return request.content.read() if request.content is not None else b""

    async def upload(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        media_id = await media.upload(
            requester.user_id, body_bytes(request), request.header("Content-Type"),
            query_string(request, "filename"),
        )  # fmt: skip
        return 200, {"content_uri": media.mxc(media_id)}

    async def create(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        media_id, expires = await media.create(requester.user_id)
        return 200, {"content_uri": media.mxc(media_id), "unused_expires_at": expires}

    async def upload_to(request: MatrixRequest, server_name: str, media_id: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if server_name != hs.config.server_name:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown media ID")
        await media.upload(
            requester.user_id, body_bytes(request), request.header("Content-Type"),
            query_string(request, "filename"), media_id=media_id,
        )  # fmt: skip
        return 200, {}

    def downloader(authenticated: bool) -> Any:
        async def download(
            request: MatrixRequest, server_name: str, media_id: str, file_name: str | None = None
        ) -> tuple[int, Any]:
            if authenticated:
                await hs.auth.get_user_by_req(request)
            info, data = await media.download(server_name, media_id, authenticated)
            for name, value in content_headers(
                info.content_type, file_name or info.upload_name
            ).items():
                request.setHeader(name.encode(), value.encode())
            return 200, data

        return download

    def thumbnailer(authenticated: bool) -> Any:
        async def thumbnail(
            request: MatrixRequest, server_name: str, media_id: str
        ) -> tuple[int, Any]:
            if authenticated:
                await hs.auth.get_user_by_req(request)
            width = query_int(request, "width", 0, minimum=1)
            height = query_int(request, "height", 0, minimum=1)
            if width == 0 or height == 0:
                raise MatrixError(400, Codes.MISSING_PARAM, "width and height are required")
            method = query_string(request, "method", "scale", ("crop", "scale"))
            assert method is not None
            content_type, data = await media.thumbnail(
                server_name, media_id, width, height, method, authenticated
            )
            for name, value in content_headers(content_type, None).items():
                request.setHeader(name.encode(), value.encode())
            return 200, data

        return thumbnail

    async def config(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.get_user_by_req(request)
        return 200, {"m.upload.size": hs.config.media.max_upload_bytes}

    async def preview_url(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.get_user_by_req(request)
        url = query_string(request, "url")
        if not url:
            raise MatrixError(400, Codes.MISSING_PARAM, "url is required")
        return 200, await hs.url_previews.preview(url)

    add = router.add
    add("POST", LEGACY + "/upload", upload, "media_upload")
    add("POST", "/_matrix/media/v1/create", create, "media_create")
    add("PUT", LEGACY + "/upload/{server_name}/{media_id}", upload_to, "media_upload")
    for prefix, authenticated in ((AUTHED, True), (LEGACY, False)):
        name = "media_download" if authenticated else "media_download_legacy"
        add("GET", prefix + "/download/{server_name}/{media_id}", downloader(authenticated), name)
        add(
            "GET",
            prefix + "/download/{server_name}/{media_id}/{file_name}",
            downloader(authenticated),
            name,
        )
        add(
            "GET",
            prefix + "/thumbnail/{server_name}/{media_id}",
            thumbnailer(authenticated),
            "media_thumbnail" if authenticated else "media_thumbnail_legacy",
        )
        add("GET", prefix + "/config", config, "media_config")
        add("GET", prefix + "/preview_url", preview_url, "media_preview_url")
