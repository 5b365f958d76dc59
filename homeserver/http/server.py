"""Routing and the request lifecycle: every response, success or error, leaves from here.

Servlets register ``(method, path template, handler)``. A handler is a coroutine
returning ``(status, json_body)``; any ``MatrixError`` it raises becomes the
Matrix error response, and anything else becomes a logged 500 that reveals nothing.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from twisted.internet import defer
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from homeserver import metrics
from homeserver.errors import Codes, MatrixError

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("homeserver.access")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})

JsonDict = dict[str, Any]
Handler = Callable[..., Awaitable[tuple[int, Any]]]

_TEMPLATE_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

CORS_HEADERS = {
    b"Access-Control-Allow-Methods": b"GET, HEAD, POST, PUT, DELETE, OPTIONS",
    b"Access-Control-Allow-Headers": b"X-Requested-With, Content-Type, Authorization, Date",
    b"Access-Control-Expose-Headers": b"ETag, Content-Disposition, Retry-After",
}


class MatrixRequest(server.Request):
    """A request that refuses to buffer a body larger than the configured limit (media
    uploads have their own, larger limit)."""

    max_json_body_size = 1024 * 1024
    max_upload_size = 50 * 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Twisted would parse every POST's Content-Type with the e-mail package (~0.1 ms a
        # request) and a multipart or form body into ``args``, which nothing here reads:
        # bodies are JSON or media, and the consent form parses its own.
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(*args, **kwargs)
        self.body_too_large = False
        self.servlet_name = "unrecognised"
        self.requester_id: str | None = None
        self.client_ip: str = ""
        self.started = time.perf_counter()
        self.max_body_size = self.max_json_body_size

    def gotLength(self, length: int | None) -> None:
        path = getattr(self.channel, "_path", b"") or b""
        if path.startswith(b"/_matrix/media/") and b"/upload" in path:
            self.max_body_size = self.max_upload_size
        if length is not None and length > self.max_body_size:
            self.body_too_large = True
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        if self.content is not None and self.content.tell() + len(data) > self.max_body_size:
            self.body_too_large = True
            self.content = io.BytesIO()
            return
        super().handleContentChunk(data)

    def query_arg(self, name: str) -> str | None:
        values = self.args.get(name.encode("ascii")) if self.args else None
        if not values:
            return None
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"Query parameter {name!r} is not UTF-8"
            ) from None

    def query_args(self, name: str) -> list[str]:
        values = self.args.get(name.encode("ascii"), []) if self.args else []
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"Query parameter {name!r} is not UTF-8"
            ) from None

    def header(self, name: str) -> str | None:
        value = self.getHeader(name)
        return value if isinstance(value, str) or value is None else value.decode("latin-1")


@dataclass(frozen=True)
class Route:
    method: str
    regex: re.Pattern[str]
    handler: Handler
    name: str


def compile_template(template: str) -> re.Pattern[str]:
    """``/rooms/{roomId}/state`` -> a regex with one named group per path variable."""
    pattern = ""
    position = 0
    for match in _TEMPLATE_VAR.finditer(template):
        pattern += re.escape(template[position : match.start()])
        pattern += f"(?P<{match.group(1)}>[^/]+)"
        position = match.end()
    pattern += re.escape(template[position:])
    return re.compile(f"^{pattern}$")


def encode_json(body: Any) -> bytes:
    return msgspec.json.encode(body)


class Router:
    """Matches a path to its routes. Routes are bucketed by their first five segments and
    their number of segments (a path variable is exactly one segment), so a request tries a
    handful of patterns, not every route of the API; a route whose fifth segment is a
    variable joins every bucket of its prefix and length. Each bucket keeps registration
    order, so the first route added still wins."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str, int], list[Route]] = {}
        self._any_fifth: dict[tuple[str, int], list[Route]] = {}

    @staticmethod
    def _key(path: str) -> tuple[str, str, int]:
        segments = path.split("/")
        fifth = segments[4] if len(segments) > 4 else ""
        return "/".join(segments[:4]), fifth, len(segments)

    def add(self, method: str, templates: str | list[str], handler: Handler, name: str) -> None:
        for template in [templates] if isinstance(templates, str) else templates:
            route = Route(method, compile_template(template), handler, name)
            prefix, fifth, count = self._key(template)
            if "{" in prefix:
                raise ValueError(
                    f"path variables in the first segments are unsupported: {template}"
                )
            if "{" in fifth:
                self._any_fifth.setdefault((prefix, count), []).append(route)
                for (p, _, c), routes in self._buckets.items():
                    if (p, c) == (prefix, count):
                        routes.append(route)
            else:
                key = (prefix, fifth, count)
                if key not in self._buckets:
                    self._buckets[key] = list(self._any_fifth.get((prefix, count), []))
                self._buckets[key].append(route)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """Returns (route, path arguments, methods allowed on that path)."""
        allowed: list[str] = []
        prefix, fifth, count = self._key(path)
        routes = self._buckets.get((prefix, fifth, count))
        for route in routes if routes is not None else self._any_fifth.get((prefix, count), []):
            found = route.regex.match(path)
            if not found:
                continue
            if route.method == method:
                kwargs = {k: unquote(v) for k, v in found.groupdict().items()}
                return route, kwargs, allowed
            allowed.append(route.method)
        return None, {}, allowed


class JsonResource(Resource):
    """The root resource of a listener: every request is dispatched through ``Router``."""

    isLeaf = True

    def __init__(self, router: Router, cors_origin: str = "*") -> None:
        super().__init__()
        self.router = router
        self.cors_origin = cors_origin.encode("utf-8")

    def render(self, request: server.Request) -> Any:
        assert isinstance(request, MatrixRequest)
        defer.ensureDeferred(self._handle(request))
        return NOT_DONE_YET

    async def _handle(self, request: MatrixRequest) -> None:
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        try:
            request.setHeader(b"Access-Control-Allow-Origin", self.cors_origin)
            for header, value in CORS_HEADERS.items():
                request.setHeader(header, value)
            if method == "OPTIONS":
                request.servlet_name = "options"
                _respond(request, 200, {})
                return
            route, kwargs, allowed = self.router.match("GET" if method == "HEAD" else method, path)
            if route is None:
                if allowed:
                    request.setHeader(b"Allow", ", ".join(sorted(set(allowed))).encode())
                    raise MatrixError(405, Codes.UNRECOGNIZED, f"Method {method} not allowed here")
                raise MatrixError(404, Codes.UNRECOGNIZED, "Unrecognized request")
            request.servlet_name = route.name
            if any("\x00" in value for value in kwargs.values()):
                raise MatrixError(
                    400, Codes.INVALID_PARAM, "Path parameters may not contain NUL characters"
                )
            if request.body_too_large:
                raise MatrixError(
                    413,
                    Codes.TOO_LARGE,
                    f"Request body is larger than {request.max_body_size} bytes",
                )
            code, body = await route.handler(request, **kwargs)
            _respond(request, code, body)
        except MatrixError as e:
            for extra_name, extra_value in e.headers.items():
                request.setHeader(extra_name.encode("ascii"), extra_value.encode("ascii"))
            if e.code >= 500:
                logger.error("%s %s -> %s", method, path, e)
            _respond(request, e.code, e.to_json())
        except Exception:
            logger.error("Unhandled error handling %s %s", method, path, exc_info=True)
            _respond(request, 500, {"errcode": Codes.UNKNOWN, "error": "Internal server error"})


@dataclass(frozen=True)
class FileBody:
    """A response streamed from a file on disk, never read whole into memory."""

    path: str
    content_type: str
    download_name: str


def _send_file(request: MatrixRequest, code: int, body: FileBody) -> None:
    source = open(body.path, "rb")  # noqa: SIM115 (closed when the transfer ends)
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", body.content_type.encode("ascii"))
    request.setHeader(
        b"Content-Disposition", f'attachment; filename="{body.download_name}"'.encode("ascii")
    )
    request.setHeader(b"Content-Length", str(os.fstat(source.fileno()).st_size).encode("ascii"))
    if request.method == b"HEAD":
        source.close()
        request.finish()
        return

    def done(_: object) -> None:
        source.close()
        if not request.finished and not request._disconnected:
            request.finish()

    FileSender().beginFileTransfer(source, request).addBoth(done)


def _respond(request: MatrixRequest, code: int, body: Any) -> None:
    if request.finished or request._disconnected:
        return
    if isinstance(body, FileBody):
        _send_file(request, code, body)
        return
    payload = body if isinstance(body, bytes) else encode_json(body)
    request.setResponseCode(code)
    if not isinstance(body, bytes):
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-cache, no-store, must-revalidate")
    request.setHeader(b"Content-Length", str(len(payload)).encode("ascii"))
    if request.method != b"HEAD":
        request.write(payload)
    request.finish()


class MatrixSite(server.Site):
    """A Site producing ``MatrixRequest``s and writing our own access log and metrics."""

    def __init__(
        self,
        resource: Resource,
        max_body_size: int,
        access_log: bool,
        name: str,
        max_upload_size: int = 50 * 1024 * 1024,
        access_log_ips: bool = True,
    ) -> None:
        super().__init__(resource)
        self.access_log = access_log
        self.access_log_ips = access_log_ips
        self.listener_name = name

        class _Request(MatrixRequest):
            max_json_body_size = max_body_size

        _Request.max_upload_size = max_upload_size
        self.requestFactory = _Request

    def log(self, request: Any) -> None:
        assert isinstance(request, MatrixRequest)
        elapsed = time.perf_counter() - request.started
        method = request.method.decode("ascii", "replace")
        # A made-up method would otherwise add a permanent series to the metrics.
        label = method if method in KNOWN_METHODS else "OTHER"
        code = request.code
        metrics.HTTP_REQUESTS.labels(request.servlet_name, label, str(code)).inc()
        metrics.HTTP_REQUEST_SECONDS.labels(request.servlet_name, label).observe(elapsed)
        if self.access_log and access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                "%s %s %s %s %d %.1fms %s",
                (request.client_ip or getattr(request.getClientAddress(), "host", "-"))
                if self.access_log_ips
                else "-",
                request.requester_id or "-",
                method,
                _redact_query(request.uri.decode("utf-8", "replace")),
                code,
                elapsed * 1000,
                request.servlet_name,
            )


_TOKEN_IN_QUERY = re.compile(r"(access_token=)[^&]*")


def _redact_query(uri: str) -> str:
    return _TOKEN_IN_QUERY.sub(r"\1<redacted>", uri)


def log_failure(failure: Failure) -> None:
    logger.error("Background task failed", exc_info=failure.value)


class MetricsResource(Resource):
    """Prometheus text exposition of every metric in the default registry."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(REGISTRY)
