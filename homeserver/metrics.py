"""Prometheus metrics: defined once here, updated where the work happens."""

from __future__ import annotations

import gc
import time

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "homeserver_http_requests_total",
    "HTTP requests by servlet, method and response status",
    ["servlet", "method", "code"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "homeserver_http_request_duration_seconds",
    "Time from receiving a request to finishing its response",
    ["servlet", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DB_TXN_SECONDS = Histogram(
    "homeserver_db_transaction_duration_seconds",
    "Time spent inside each named database transaction",
    ["name"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
ROOM_EVENTS_PER_WRITE = Histogram(
    "homeserver_room_events_per_write",
    "Room events (of any rooms) written in one database transaction (group commit)",
    buckets=(1, 2, 3, 5, 10, 20, 50, 100),
)
CLIENT_IP_BUFFERED = Gauge(
    "homeserver_client_ips_buffered",
    "Client IP sightings waiting to be written to the database",
)
CLIENT_IPS_PURGED = Counter(
    "homeserver_client_ips_purged_total",
    "Client IP records deleted because they outlived the retention period",
)

GC_PAUSE_SECONDS = Histogram(
    "homeserver_gc_pause_seconds",
    "Time the cyclic garbage collector held the process, per generation",
    ["generation"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


_gc_tracked: list[bool] = []


def track_gc_pauses() -> None:
    """Time every collection: a full one walks every live container (each cached event is
    a tree of dicts), so its pauses grow with the heap and show in tail latencies."""
    if _gc_tracked:
        return
    _gc_tracked.append(True)
    started: list[float] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            GC_PAUSE_SECONDS.labels(str(info.get("generation", -1))).observe(
                time.perf_counter() - started[0]
            )

    gc.callbacks.append(callback)
