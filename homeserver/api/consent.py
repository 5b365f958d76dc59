"""The privacy policy page (/_matrix/consent): read it, and accept it through a plain HTML
form that needs no JavaScript."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from homeserver.errors import not_found
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import query_string

if TYPE_CHECKING:
    from homeserver.server import HomeServer

MAX_FORM_BYTES = 4096
HEADERS = {
    b"Content-Type": b"text/html; charset=utf-8",
    b"Content-Security-Policy": b"default-src 'none'; style-src 'unsafe-inline'; "
    b"form-action 'self'; frame-ancestors 'none'",
    b"X-Frame-Options": b"DENY",
    b"Cache-Control": b"no-store",
}


def register(hs: HomeServer, router: Router) -> None:
    consent = hs.consent

    def html_page(request: MatrixRequest, code: int, page: str) -> tuple[int, Any]:
        for name, value in HEADERS.items():
            request.setHeader(name, value)
        return code, page.encode("utf-8")

    async def show(request: MatrixRequest) -> tuple[int, Any]:
        if not consent.enabled:
            raise not_found("This server has no consent page")
        page = consent.page(query_string(request, "u"), query_string(request, "h"))
        return html_page(request, 200, page)

    async def submit(request: MatrixRequest) -> tuple[int, Any]:
        if not consent.enabled:
            raise not_found("This server has no consent page")
        raw = request.content.read(MAX_FORM_BYTES + 1) if request.content else b""
        fields = parse_qs(raw[:MAX_FORM_BYTES].decode("utf-8", "replace"))
        form = {key: values[0] for key, values in fields.items() if values}
        code, page = await consent.accept(form)
        return html_page(request, code, page)

    router.add("GET", "/_matrix/consent", show, "consent")
    router.add("POST", "/_matrix/consent", submit, "consent")
