"""Media across servers: the authenticated federation media API, both ways.

Answers are ``multipart/mixed``: a JSON metadata part, then the content itself (or a part
with a ``Location`` header, followed with plain HTTPS). The multipart format is read and
written with the standard library's email package.
"""

from __future__ import annotations

import email.parser
import email.policy
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit

from homeserver.federation.client import FederationError, ResponseTooLarge

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]
MAX_REDIRECTS = 5


class RemoteMediaError(Exception):
    """The other server has no such media, or sent something unusable."""

    def __init__(self, message: str, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


@dataclass(frozen=True)
class MediaPart:
    content_type: str | None
    disposition: str | None
    data: bytes | None
    location: str | None


def multipart_answer(
    content_type: str | None, disposition: str | None, data: bytes
) -> tuple[str, bytes]:
    """(Content-Type header, body) of a federation media answer."""
    boundary = secrets.token_hex(16)
    headers = f"Content-Type: {content_type or 'application/octet-stream'}\r\n"
    if disposition:
        headers += f"Content-Disposition: {disposition}\r\n"
    body = (
        (
            f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
            f"--{boundary}\r\n{headers}\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f"multipart/mixed; boundary={boundary}", body


def parse_multipart(content_type: str, body: bytes) -> MediaPart:
    """The media part of a federation media answer; ValueError for anything else."""
    if not content_type.lower().startswith("multipart/mixed"):
        raise ValueError("not a multipart/mixed answer")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    if not message.is_multipart():
        raise ValueError("no parts")
    parts = list(message.iter_parts())
    if len(parts) < 2:
        raise ValueError("expected a metadata part and a media part")
    media = parts[1]
    location = media.get("Location")
    data = media.get_payload(decode=True)
    return MediaPart(
        media.get("Content-Type"),
        media.get("Content-Disposition"),
        data if isinstance(data, bytes) and location is None else None,
        str(location) if location else None,
    )


class FederationMedia:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def fetch(
        self, server_name: str, media_id: str, thumbnail: JsonDict | None = None
    ) -> MediaPart:
        """The media (or a thumbnail of it) from its server, redirects followed."""
        kind = "thumbnail" if thumbnail else "download"
        max_bytes = self.hs.config.media.max_upload_bytes + 65_536
        try:
            code, headers, body = await self.hs.federation_client.request_raw(
                server_name,
                "GET",
                f"/_matrix/federation/v1/media/{kind}/{quote(media_id, safe='')}",
                query=thumbnail,
                timeout_ms=30_000,
                max_bytes=max_bytes,
            )
        except FederationError as e:
            raise RemoteMediaError(f"{server_name} did not answer: {e}") from None
        if code == 404:
            raise RemoteMediaError("Media not found", not_found=True)
        if code != 200:
            raise RemoteMediaError(f"{server_name} answered HTTP {code}")
        try:
            part = parse_multipart(headers.get("content-type", ""), body)
        except ValueError as e:
            raise RemoteMediaError(f"{server_name} sent an unusable answer: {e}") from None
        if part.location is not None:
            return await self._follow(part, max_bytes)
        return part

    async def _follow(self, part: MediaPart, max_bytes: int) -> MediaPart:
        url = str(part.location)
        for _ in range(MAX_REDIRECTS + 1):
            if urlsplit(url).scheme != "https":
                raise RemoteMediaError("media location is not https")
            try:
                answer = await self.hs.federation_client.https_get(url, max_bytes)
            except ResponseTooLarge:
                raise RemoteMediaError("media is larger than this server accepts") from None
            except Exception as e:
                raise RemoteMediaError(f"media location did not answer: {e}") from None
            location = answer.headers.get("location")
            if answer.status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                continue
            if answer.status != 200:
                raise RemoteMediaError(f"media location answered HTTP {answer.status}")
            return MediaPart(
                answer.headers.get("content-type"),
                answer.headers.get("content-disposition"),
                answer.body,
                None,
            )
        raise RemoteMediaError("too many redirects for the media location")
