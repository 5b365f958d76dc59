"""Start-up: load config, open the database, migrate, build the HomeServer, listen."""

from __future__ import annotations

import logging
import sys
from typing import Any

from twisted.internet import defer, endpoints, ssl
from twisted.web.resource import Resource

from config import HomeserverConfig
from config.schema import ListenerConfig
from crypto.signing_keys import read_signing_key
from homeserver import metrics
from homeserver.gc_policy import collect_oldest_on_a_timer
from homeserver.http.server import JsonResource, MatrixSite, MetricsResource, Router
from homeserver.server import HomeServer
from homeserver.storage.engine import Database, engine_from_config
from homeserver.storage.migrate import prepare_database

logger = logging.getLogger(__name__)


def setup_logging(config: HomeserverConfig) -> None:
    handler: logging.Handler
    if config.logging.file:
        handler = logging.FileHandler(config.logging.file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.logging.level)
    if not config.logging.access_log:
        logging.getLogger("homeserver.access").setLevel(logging.WARNING)


def _tls_options(listener: ListenerConfig) -> Any:
    assert listener.tls_certificate_path and listener.tls_private_key_path
    with open(listener.tls_certificate_path, "rb") as f:
        cert_pem = f.read()
    with open(listener.tls_private_key_path, "rb") as f:
        key_pem = f.read()
    certificate = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    return certificate.options()


class _ListenerRoot(Resource):
    """Sends /metrics (and /_metrics) to Prometheus and everything else to the JSON API."""

    def __init__(self, api: Resource | None, metrics_resource: Any) -> None:
        super().__init__()
        self.api = api
        self.metrics_resource = metrics_resource
        self.not_found = JsonResource(Router())

    def getChild(self, path: bytes, request: Any) -> Any:
        if self.metrics_resource is not None and path in (b"metrics", b"_metrics"):
            return self.metrics_resource
        return self.api or self.not_found

    def render(self, request: Any) -> Any:
        return self.getChild(b"", request).render(request)


async def listen(hs: HomeServer, reactor: Any) -> list[Any]:
    """Open every configured listener; returns the listening ports (port 0 picks a free one)."""
    ports = []
    for listener in hs.config.listeners:
        json_resources = [r for r in listener.resources if r != "metrics"]
        root = _ListenerRoot(
            JsonResource(hs.build_router(json_resources), hs.config.http.cors_allowed_origin)
            if json_resources
            else None,
            MetricsResource()
            if "metrics" in listener.resources and hs.config.metrics.enabled
            else None,
        )
        site = MatrixSite(
            root,
            max_body_size=hs.config.http.max_body_bytes,
            max_upload_size=hs.config.media.max_upload_bytes,
            access_log=hs.config.logging.access_log and bool(json_resources),
            access_log_ips=hs.config.logging.access_log_ips,
            name=f"listener:{listener.port}",
        )
        for address in listener.bind_addresses:
            endpoint: Any
            if listener.tls:
                endpoint = endpoints.SSL4ServerEndpoint(
                    reactor, listener.port, _tls_options(listener), interface=address
                )
            else:
                endpoint = endpoints.TCP4ServerEndpoint(reactor, listener.port, interface=address)
            port = await endpoint.listen(site)
            ports.append(port)
            scheme = "https" if listener.tls else "http"
            logger.info(
                "Listening on %s://%s:%d (%s)",
                scheme,
                address,
                port.getHost().port,
                ", ".join(listener.resources),
            )
    return ports


async def open_homeserver(config: HomeserverConfig, reactor: Any) -> HomeServer:
    """The server's parts over its database, not yet serving (for tools run beside it)."""
    engine = engine_from_config(config.database)
    version = prepare_database(engine)
    logger.info("Database %s ready at schema version %d", engine.name, version)
    db = Database(engine)
    db.start()
    signing_key = read_signing_key(config.signing_key_path)
    return await HomeServer.create(config, reactor, db, signing_key)


async def start(config: HomeserverConfig, reactor: Any) -> HomeServer:
    hs = await open_homeserver(config, reactor)
    hs.start_background_tasks()
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.ensureDeferred(hs.client_ips.flush())
    )
    await listen(hs, reactor)
    logger.info("Homeserver %s started", config.server_name)
    return hs


def run(config: HomeserverConfig) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    setup_logging(config)
    metrics.track_gc_pauses()
    exit_code = 0

    def _started(_: object) -> None:
        # Start-up's objects live as long as the process: frozen out of every collection.
        collect_oldest_on_a_timer(
            reactor, config.garbage_collection.full_collection_interval_ms / 1000
        )
        # Tests and wrapper scripts wait for this line on standard output.
        print("homeserver: ready", flush=True)

    def _failed(failure: Any) -> None:
        nonlocal exit_code
        logger.error("Start-up failed: %s", failure.getErrorMessage())
        exit_code = 1
        reactor.stop()

    def _go() -> None:
        d = defer.ensureDeferred(start(config, reactor))
        d.addCallbacks(_started, _failed)

    reactor.callWhenRunning(_go)
    reactor.run()
    return exit_code
