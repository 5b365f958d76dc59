"""The media repository: uploads stored as files, metadata in the database, thumbnails made
with Pillow (in a thread) and cached, and downloads served so that nothing runs in a browser."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
from typing import TYPE_CHECKING
from urllib.parse import quote

from twisted.internet import threads

from homeserver.errors import Codes, MatrixError, forbidden, not_found
from homeserver.federation.media import RemoteMediaError
from homeserver.storage.media import MediaInfo, MediaStore

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

THUMBNAIL_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
# Served with their own type and inline; everything else is an attachment of type
# application/octet-stream, so uploaded HTML, SVG or scripts never run from our origin.
INLINE_TYPES = {
    "image/jpeg", "image/png", "image/gif", "image/webp", "image/apng", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/mpeg", "audio/ogg", "audio/webm", "audio/wav", "audio/wave",
    "audio/x-wav", "audio/flac", "text/plain", "text/csv", "application/json",
    "application/ld+json",
}  # fmt: skip
CSP = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)
MAX_THUMBNAIL_SOURCE_PIXELS = 40_000_000


def _thumbnail(data: bytes, width: int, height: int, method: str) -> tuple[bytes, str]:
    """Scale (fit inside) or crop (fill exactly) with Pillow; PNG keeps transparency."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.width * image.height > MAX_THUMBNAIL_SOURCE_PIXELS:
            raise ValueError("image too large to thumbnail")
        image.seek(0)
        source = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
        if method == "crop":
            # Never upscale (the spec forbids it): a source smaller than the box is only
            # cropped, to at most the box.
            ratio = min(max(width / source.width, height / source.height), 1.0)
            scaled = source.resize(
                (max(1, round(source.width * ratio)), max(1, round(source.height * ratio))),
                Image.Resampling.LANCZOS,
            )
            crop_width, crop_height = min(width, scaled.width), min(height, scaled.height)
            left = (scaled.width - crop_width) // 2
            top = (scaled.height - crop_height) // 2
            result = scaled.crop((left, top, left + crop_width, top + crop_height))
        else:
            ratio = min(width / source.width, height / source.height, 1.0)
            result = source.resize(
                (max(1, round(source.width * ratio)), max(1, round(source.height * ratio))),
                Image.Resampling.LANCZOS,
            )
        out = io.BytesIO()
        if result.mode == "RGBA":
            result.save(out, "PNG", optimize=True)
            return out.getvalue(), "image/png"
        result.save(out, "JPEG", quality=85)
        return out.getvalue(), "image/jpeg"


class MediaService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config = hs.config.media
        self.store = MediaStore(hs.db)
        self.root = hs.config.media.store_path

    # Paths

    def _file(self, media_id: str) -> str:
        return os.path.join(self.root, "local", media_id[:2], media_id[2:4], media_id[4:])

    def _thumbnail_file(self, media_id: str, width: int, height: int, method: str) -> str:
        return os.path.join(
            self.root, "thumbnails", media_id[:2], media_id[2:4], media_id[4:],
            f"{width}x{height}-{method}",
        )  # fmt: skip

    def mxc(self, media_id: str) -> str:
        return f"mxc://{self.hs.config.server_name}/{media_id}"

    # Metadata

    async def get_info(self, media_id: str) -> MediaInfo | None:
        return await self.store.get_info(media_id)

    # Upload

    async def create(self, user_id: str) -> tuple[str, int]:
        """Reserve a media ID for an asynchronous upload."""
        media_id = secrets.token_urlsafe(18)
        now = self.hs.clock.time_msec()
        expires = now + int(self.config.unused_expires_after)
        await self.store.reserve(media_id, user_id, now, expires)
        return media_id, expires

    async def upload(
        self,
        user_id: str,
        data: bytes,
        content_type: str | None,
        upload_name: str | None,
        media_id: str | None = None,
    ) -> str:
        if len(data) > self.config.max_upload_bytes:
            raise MatrixError(413, Codes.TOO_LARGE, "Upload is larger than the server accepts")
        quota = self.config.quota_bytes
        if quota and await self.store.used_bytes(user_id) + len(data) > quota:
            # The spec lists a reached quota under 403 M_FORBIDDEN (413 is for one large file).
            raise forbidden("Upload would exceed your media quota")
        now = self.hs.clock.time_msec()
        if media_id is not None:
            info = await self.get_info(media_id)
            if info is None:
                raise not_found("Unknown media ID")
            if info.user_id != user_id:
                raise forbidden("This media ID was created by another user")
            if info.uploaded_ts is not None:
                raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
            if info.expires_ts is not None and info.expires_ts <= now:
                raise not_found("This media ID's reservation has expired")
            # Concurrent uploads to one created ID: the file goes aside first, and only the
            # upload that claims the row in the database puts it in place.
            path = self._file(media_id)
            aside = f"{path}.{secrets.token_hex(8)}.part"
            await threads.deferToThread(_write_file, aside, data)
            if not await self.store.complete_upload(
                media_id, user_id, content_type, upload_name, len(data), now
            ):
                await threads.deferToThread(_remove_files, [aside])
                raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
            await threads.deferToThread(os.replace, aside, path)
            return media_id
        media_id = secrets.token_urlsafe(18)
        path = self._file(media_id)
        await threads.deferToThread(_write_file, path, data)

        await self.store.store(media_id, user_id, content_type, upload_name, len(data), now)
        return media_id

    # Download

    async def _remote(self, server_name: str, media_id: str) -> MediaInfo:
        """Another server's media, fetched once over federation and then kept here."""
        if await self.store.remote_quarantined(server_name, media_id):
            raise not_found("Media not found")
        info = await self.store.get_remote(server_name, media_id)
        if info is not None:
            return info
        if not self.hs.config.federation.enabled:
            raise not_found("Media not found")
        try:
            part = await self.hs.federation_media.fetch(server_name, media_id)
        except RemoteMediaError as e:
            if e.not_found:
                raise not_found("Media not found") from None
            raise MatrixError(502, Codes.UNKNOWN, str(e)) from None
        data = part.data or b""
        if len(data) > self.config.max_upload_bytes:
            raise MatrixError(502, Codes.TOO_LARGE, "Remote media is larger than allowed here")
        local_id = "r" + secrets.token_urlsafe(18)
        await threads.deferToThread(_write_file, self._file(local_id), data)
        content_type = (part.content_type or "application/octet-stream").split(";")[0].strip()
        await self.store.store_remote(
            server_name, media_id, local_id, content_type, _filename(part.disposition),
            len(data), self.hs.clock.time_msec(),
        )  # fmt: skip
        stored = await self.store.get_remote(server_name, media_id)
        assert stored is not None
        if stored.media_id != local_id:  # fetched concurrently: keep the first copy
            await threads.deferToThread(_remove_files, [self._file(local_id)])
        return stored

    async def _local(self, server_name: str, media_id: str, allow_legacy: bool) -> MediaInfo:
        if server_name != self.hs.config.server_name:
            if not allow_legacy and not self.config.legacy_unauthenticated:
                raise not_found("Use the authenticated media endpoints")
            return await self._remote(server_name, media_id)
        info = await self.get_info(media_id)
        if info is None or (await self.store.quarantined_by(media_id))[0] is not None:
            raise not_found("Media not found")
        if not allow_legacy:
            before = self.config.legacy_unauthenticated_before
            if not self.config.legacy_unauthenticated and not (
                before is not None and info.created_ts < before
            ):
                raise not_found("Use the authenticated media endpoints")
        if info.uploaded_ts is None:
            # Created with /create but not uploaded yet (the spec lets us answer at once).
            raise MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
        return info

    async def download(
        self, server_name: str, media_id: str, authenticated: bool
    ) -> tuple[MediaInfo, bytes]:
        info = await self._local(server_name, media_id, authenticated)
        data: bytes = await threads.deferToThread(_read_file, self._file(info.media_id))
        return info, data

    async def thumbnail(
        self, server_name: str, media_id: str, width: int, height: int, method: str,
        authenticated: bool,
    ) -> tuple[str, bytes]:  # fmt: skip
        """(content type, bytes) of a thumbnail, generated once and then cached."""
        info = await self._local(server_name, media_id, authenticated)
        media_id = info.media_id  # a remote one's local copy
        if info.content_type not in THUMBNAIL_TYPES:
            raise MatrixError(400, Codes.UNKNOWN, "Cannot generate thumbnails for this content")
        width, height = self._choose_size(width, height, method)
        cached = await self.store.get_thumbnail_type(media_id, width, height, method)
        path = self._thumbnail_file(media_id, width, height, method)
        if cached is not None:
            return cached, await threads.deferToThread(_read_file, path)
        original = await threads.deferToThread(_read_file, self._file(media_id))
        try:
            data, content_type = await threads.deferToThread(
                _thumbnail, original, width, height, method
            )
        except Exception:
            raise MatrixError(
                400, Codes.UNKNOWN, "Cannot generate thumbnails for the requested content"
            ) from None
        await threads.deferToThread(_write_file, path, data)
        await self.store.store_thumbnail(media_id, width, height, method, content_type, len(data))
        return content_type, data

    def _choose_size(self, width: int, height: int, method: str) -> tuple[int, int]:
        """The smallest configured size at least as large as asked (or the largest)."""
        sizes = sorted((w, h) for w, h in self.config.thumbnail_sizes)
        for w, h in sizes:
            if w >= width and h >= height:
                return w, h
        return sizes[-1] if sizes else (width, height)

    # Deletion

    async def purge_remote_cache(self, before_ts: int) -> int:
        """Forget other servers' media fetched before ``before_ts`` (fetched again if asked)."""
        old = await self.store.old_remote_media(before_ts)
        for server_name, media_id, local_id in old:
            thumbnails = await self.store.thumbnails_of(local_id)
            paths = [self._file(local_id)] + [
                self._thumbnail_file(local_id, w, h, m) for w, h, m in thumbnails
            ]
            await threads.deferToThread(_remove_files, paths)
            await self.store.delete(local_id)
            await self.store.delete_remote(server_name, media_id)
        return len(old)

    async def delete_user_media(self, user_id: str) -> list[str]:
        """Every file the user uploaded, with its thumbnails; returns the media IDs."""
        media_ids = await self.store.user_media_ids(user_id)
        for media_id in media_ids:
            await self.delete(media_id)
        return list(media_ids)

    async def delete(self, media_id: str) -> bool:
        info = await self.get_info(media_id)
        if info is None:
            return False
        thumbnails = await self.store.thumbnails_of(media_id)
        paths = [self._file(media_id)] + [
            self._thumbnail_file(media_id, w, h, m) for w, h, m in thumbnails
        ]
        await threads.deferToThread(_remove_files, paths)

        await self.store.delete(media_id)
        return True


def content_headers(content_type: str | None, upload_name: str | None) -> dict[str, str]:
    """Headers that keep uploaded content from running as part of our site."""
    base_type = (content_type or "").split(";")[0].strip().lower()
    inline = base_type in INLINE_TYPES
    served_type = (
        (content_type or "application/octet-stream") if inline else ("application/octet-stream")
    )
    disposition = "inline" if inline else "attachment"
    if upload_name:
        disposition += f"; filename*=utf-8''{quote(upload_name, safe='')}"
    return {
        "Content-Type": served_type,
        "Content-Disposition": disposition,
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "Cache-Control": "public, max-age=86400, immutable",
    }


def _write_file(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise MatrixError(404, Codes.NOT_FOUND, "Media file is missing") from None


def _remove_files(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _filename(disposition: str | None) -> str | None:
    """The file name in a Content-Disposition header, if any."""
    if not disposition:
        return None
    from email.message import Message

    message = Message()
    message["Content-Disposition"] = disposition
    name = message.get_filename()
    return name if isinstance(name, str) else None
