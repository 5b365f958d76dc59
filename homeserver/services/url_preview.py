"""URL previews (off unless ``media.url_preview_enabled``): fetch a page as a client asked,
safely, and answer its Open Graph description with the image stored as our media.

Safe means: only http(s); every connection (redirects included) to addresses outside the
preview blacklist, checked after DNS resolution; bodies cut at the size limit and the
whole fetch at the time limit; only HTML and images looked at, HTML with the standard
library's parser (no scripts run, nothing else fetched but the one image); oEmbed only for
the configured providers. Results are kept for ``url_preview_cache_time``.
"""

from __future__ import annotations

import fnmatch
import io
import json
import logging
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin

import treq
from twisted.internet import threads
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from homeserver.errors import Codes, MatrixError
from homeserver.federation.client import ResponseTooLarge, read_bounded
from homeserver.http.outbound import AddressFilter, filtered_web_agent, parse_http_url

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_REDIRECTS = 5
PREVIEW_OWNER = "url_preview"
_OG_KEYS = ("og:title", "og:description", "og:image", "og:site_name", "og:type", "og:url")


class _PageParser(HTMLParser):
    """The bits of a page a preview shows: Open Graph meta tags, the title, a description,
    and an oEmbed link. Stops reading at </head> or after enough tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.title: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []
        self.oembed: str | None = None
        self.tags = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags += 1
        values = {k.lower(): v for k, v in attrs if v is not None}
        if tag == "meta":
            key = values.get("property") or values.get("name")
            content = values.get("content")
            if key and content is not None and key.lower() not in self.meta:
                self.meta[key.lower()] = content[:2000]
        elif tag == "title" and self.title is None:
            self._in_title = True
        elif tag == "link" and values.get("type") == "application/json+oembed":
            self.oembed = values.get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = "".join(self._title_parts).strip()[:500]

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_parts.append(data)


def describe_html(html: str, base_url: str) -> JsonDict:
    """The Open Graph description of a page (pure: no fetching)."""
    parser = _PageParser()
    try:
        parser.feed(html[:1_000_000])
        parser.close()
    except Exception:  # a broken page still gives what was read before the break
        logger.debug("HTML parse error in %s", base_url)
    og: JsonDict = {k: v for k, v in parser.meta.items() if k in _OG_KEYS}
    og.setdefault("og:title", parser.title or parser.meta.get("twitter:title"))
    og.setdefault("og:description", parser.meta.get("description"))
    if "og:image" not in og and parser.meta.get("twitter:image"):
        og["og:image"] = parser.meta["twitter:image"]
    if isinstance(og.get("og:image"), str):
        og["og:image"] = urljoin(base_url, og["og:image"])
    return {k: v for k, v in og.items() if v}


class UrlPreviewer:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config = hs.config.media
        tls = hs.federation_client.tls_creator
        address_filter = AddressFilter(
            self.config.url_preview_ip_range_blacklist, self.config.url_preview_ip_range_whitelist
        )
        self._agent: Any = filtered_web_agent(
            hs.reactor, address_filter, tls, HTTPConnectionPool(hs.reactor, persistent=False)
        )

    async def preview(self, url: str) -> JsonDict:
        if not self.config.url_preview_enabled:
            raise MatrixError(403, Codes.FORBIDDEN, "URL previews are disabled on this server")
        if parse_http_url(url) is None:
            raise MatrixError(400, Codes.INVALID_PARAM, "Only http and https URLs are previewed")
        cached = await self._cached(url)
        if cached is not None:
            return cached
        try:
            result = await self._make(url)
        except MatrixError:
            raise
        except Exception as e:
            logger.info("Preview of %s failed: %s", url, e)
            raise MatrixError(502, Codes.UNKNOWN, f"Could not preview the URL: {e}") from None
        await self._remember(url, result)
        return result

    async def _make(self, url: str) -> JsonDict:
        provider = self._oembed_endpoint(url)
        if provider is not None:
            return await self._oembed(provider, url)
        final_url, content_type, body = await self._fetch(url)
        if content_type.startswith("image/"):
            return await self._image_preview(body, content_type)
        if content_type not in ("text/html", "application/xhtml+xml"):
            return {}
        og = describe_html(body.decode("utf-8", "replace"), final_url)
        image_url = og.pop("og:image", None)
        if isinstance(image_url, str):
            try:
                _, image_type, image = await self._fetch(image_url)
                if image_type.startswith("image/"):
                    og.update(await self._image_preview(image, image_type))
            except Exception as e:
                logger.info("Preview image %s not fetched: %s", image_url, e)
        return og

    async def _fetch(self, url: str) -> tuple[str, str, bytes]:
        """(final URL, content type, body) after at most MAX_REDIRECTS redirects."""
        timeout = int(self.config.url_preview_timeout) / 1000
        for _ in range(MAX_REDIRECTS + 1):
            headers = Headers({"User-Agent": ["homeserver URL preview"]})
            response = await treq.request(
                "GET", url, agent=self._agent, headers=headers, timeout=timeout,
                allow_redirects=False,
            )  # fmt: skip
            location = response.headers.getRawHeaders(b"location")
            if response.code in (301, 302, 303, 307, 308) and location:
                response.deliverBody(_Ignore())
                try:
                    url = urljoin(url, location[0].decode("latin-1"))
                except ValueError:
                    url = ""
                if parse_http_url(url) is None:
                    raise MatrixError(400, Codes.INVALID_PARAM, "Redirected off the web")
                continue
            if response.code != 200:
                raise MatrixError(502, Codes.UNKNOWN, f"The page answered HTTP {response.code}")
            try:
                body = await read_bounded(response, int(self.config.url_preview_max_size))
            except ResponseTooLarge:
                raise MatrixError(502, Codes.TOO_LARGE, "The page is too large") from None
            raw_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
            content_type = raw_type.decode("latin-1").split(";")[0].strip().lower()
            return url, content_type, body
        raise MatrixError(502, Codes.UNKNOWN, "Too many redirects")

    async def _image_preview(self, data: bytes, content_type: str) -> JsonDict:
        size = await threads.deferToThread(_image_size, data)
        if size is None:
            return {}
        media_id = await self.hs.media.upload(PREVIEW_OWNER, data, content_type, None)
        return {
            "og:image": self.hs.media.mxc(media_id),
            "og:image:type": content_type,
            "og:image:width": size[0],
            "og:image:height": size[1],
            "matrix:image:size": len(data),
        }

    def _oembed_endpoint(self, url: str) -> str | None:
        for provider in self.config.url_preview_oembed:
            if any(fnmatch.fnmatch(url, pattern) for pattern in provider.url_patterns):
                return provider.endpoint
        return None

    async def _oembed(self, endpoint: str, url: str) -> JsonDict:
        _, _, body = await self._fetch(endpoint + "?" + urlencode({"url": url, "format": "json"}))
        data = json.loads(body)
        if not isinstance(data, dict):
            return {}
        og: JsonDict = {}
        for source, target in (("title", "og:title"), ("author_name", "og:description"),
                               ("provider_name", "og:site_name")):  # fmt: skip
            if isinstance(data.get(source), str):
                og[target] = data[source]
        thumbnail = data.get("thumbnail_url") or (data.get("url") if data.get("type") == "photo"
                                                  else None)  # fmt: skip
        if isinstance(thumbnail, str):
            try:
                _, image_type, image = await self._fetch(thumbnail)
                if image_type.startswith("image/"):
                    og.update(await self._image_preview(image, image_type))
            except Exception as e:
                logger.info("oEmbed thumbnail %s not fetched: %s", thumbnail, e)
        return og

    async def _cached(self, url: str) -> JsonDict | None:
        cutoff = self.hs.clock.time_msec() - int(self.config.url_preview_cache_time)
        return await self.hs.media.store.get_url_preview(url, cutoff)

    async def _remember(self, url: str, preview: JsonDict) -> None:
        await self.hs.media.store.store_url_preview(url, preview, self.hs.clock.time_msec())


class _Ignore:
    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass


def _image_size(data: bytes) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.size[0]), int(image.size[1])
    except Exception:
        return None
