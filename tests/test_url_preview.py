"""URL previews against a local web server serving friendly and hostile pages: Open Graph,
images stored as our media, oEmbed for configured providers, and every way a page could
make us reach inside, hang, or fill memory."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from tests.harness import Client, ServerProcess, free_port, new_user


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


class Site(BaseHTTPRequestHandler):
    port = 0
    hits: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, code: int, content_type: str, body: bytes, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        Site.hits.append(self.path)
        base = f"http://127.0.0.1:{Site.port}"
        if self.path == "/page":
            html = (
                "<html><head><title>Ignored title</title>"
                '<meta property="og:title" content="Hello &amp; welcome">'
                '<meta property="og:description" content="A friendly page">'
                '<meta property="og:image" content="/img.png">'
                "<script>alert('never run')</script></head><body>hi</body></html>"
            )
            self.reply(200, "text/html; charset=utf-8", html.encode())
        elif self.path == "/img.png":
            self.reply(200, "image/png", png())
        elif self.path == "/plain-title":
            self.reply(200, "text/html", b"<title> Just a title </title><p>x")
        elif self.path == "/inside":
            port = Site.port
            self.reply(302, "text/plain", b"", Location=f"http://127.0.0.2:{port}/page")
        elif self.path == "/loop":
            self.reply(302, "text/plain", b"", Location=f"{base}/loop")
        elif self.path == "/huge":
            self.reply(200, "text/html", b"<p>" + b"x" * 3_000_000)
        elif self.path == "/slow":
            time.sleep(4)
            self.reply(200, "text/html", b"<title>late</title>")
        elif self.path == "/binary":
            self.reply(200, "application/octet-stream", b"\x00\x01\x02")
        elif self.path.startswith("/oembed"):
            data = {"type": "video", "title": "A video", "author_name": "Someone",
                    "provider_name": "Tube", "thumbnail_url": f"{base}/img.png"}  # fmt: skip
            self.reply(200, "application/json", json.dumps(data).encode())
        else:
            self.reply(404, "text/plain", b"no")


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    port = free_port()
    Site.port = port
    httpd = ThreadingHTTPServer(("0.0.0.0", port), Site)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()


@pytest.fixture
def previewer(server_factory: Callable[..., ServerProcess], site: str) -> Client:
    server = server_factory({"media": {
        "url_preview_enabled": True,
        "url_preview_ip_range_blacklist": ["127.0.0.0/8"],
        "url_preview_ip_range_whitelist": ["127.0.0.1/32"],
        "url_preview_timeout": "1s",
        "url_preview_max_size": "1M",
        "url_preview_oembed": [{"url_patterns": [f"{site}/video/*"],
                                "endpoint": f"{site}/oembed"}],
    }})  # fmt: skip
    return new_user(server)


def preview(client: Client, url: str) -> Any:
    return client.get("/_matrix/client/v1/media/preview_url", params={"url": url})


def test_previews_are_off_by_default(alice: Client, site: str) -> None:
    resp = preview(alice, f"{site}/page")
    assert resp.status == 403 and resp.body["errcode"] == "M_FORBIDDEN"


def test_open_graph_page_with_its_image(previewer: Client, site: str) -> None:
    resp = preview(previewer, f"{site}/page")
    assert resp.status == 200, resp
    body = resp.body
    assert body["og:title"] == "Hello & welcome"
    assert body["og:description"] == "A friendly page"
    assert body["og:image"].startswith(f"mxc://{previewer.server.server_name}/")
    assert (body["og:image:width"], body["og:image:height"]) == (64, 48)
    assert body["og:image:type"] == "image/png"
    media_id = body["og:image"].rsplit("/", 1)[1]
    image = previewer.get(f"/_matrix/client/v1/media/download/"
                          f"{previewer.server.server_name}/{media_id}")  # fmt: skip
    assert image.status == 200 and image.body == png()
    hits = len(Site.hits)
    again = preview(previewer, f"{site}/page")  # from the cache: no new fetch
    assert again.body == body and len(Site.hits) == hits
    titled = preview(previewer, f"{site}/plain-title").body
    assert titled == {"og:title": "Just a title"}
    assert preview(previewer, f"{site}/binary").body == {}


def test_oembed_provider(previewer: Client, site: str) -> None:
    resp = preview(previewer, f"{site}/video/42")
    assert resp.status == 200, resp
    assert resp.body["og:title"] == "A video"
    assert resp.body["og:site_name"] == "Tube"
    assert resp.body["og:image"].startswith("mxc://")


def test_hostile_pages_fail_safe(previewer: Client, site: str) -> None:
    port = site.rsplit(":", 1)[1]
    for url in (f"http://127.0.0.2:{port}/page",  # a blacklisted address
                f"{site}/inside",  # redirected to one
                f"{site}/loop", f"{site}/huge", f"{site}/slow"):  # fmt: skip
        started = time.monotonic()
        resp = preview(previewer, url)
        assert resp.status in (502, 400), (url, resp)
        assert time.monotonic() - started < 3.5, url
    for url in ("file:///etc/passwd", "ftp://example.org/", "javascript:alert(1)", "nothing",
                "http://[::1", "http://example.org:99999/"):  # fmt: skip
        assert preview(previewer, url).status == 400, url
    assert preview(previewer, f"{site}/page").status == 200  # still working


def test_ipv4_mapped_ipv6_addresses_are_judged_as_the_ipv4_address() -> None:
    from config.schema import PRIVATE_RANGES
    from homeserver.http.outbound import AddressFilter

    blocking = AddressFilter(PRIVATE_RANGES)
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::1"):
        assert blocking.blocked(address), address
    assert not blocking.blocked("::ffff:93.184.216.34")
    allowing = AddressFilter(PRIVATE_RANGES, whitelist=["127.0.0.0/8"])
    assert not allowing.blocked("::ffff:127.0.0.1")
