"""Prometheus metrics of the serving API (exported at ``GET /metrics``): requests and latency
per endpoint and HTTP status (:func:`request_metrics`), and what only the server knows."""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from itertools import chain

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

from serving.decoding import PRESENT, STATUSES, Status

PREFIX = "fp_serving"
# Latency buckets for a server whose answers take milliseconds, not Prometheus' 5 ms..10 s.
LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5]

REQUESTS = Counter(f"{PREFIX}_requests", "HTTP requests by endpoint and status",
                   ["method", "path", "status_code"])
REQUEST_DURATION = Histogram(f"{PREFIX}_request_duration_seconds",
                             "Time to answer, by endpoint and status",
                             ["method", "path", "status_code"], buckets=LATENCY_BUCKETS)
FEATURE_VALUES = Counter(f"{PREFIX}_feature_values", "Feature values served, by status",
                         ["status"])
ENTITIES = Counter(f"{PREFIX}_entities", "Entity rows served")
VERSION_SWITCHES = Counter(f"{PREFIX}_version_map_changes",
                           "Version maps that changed in the server's cache")
REGISTRY_ERRORS = Counter(f"{PREFIX}_registry_poll_errors",
                          "Failed attempts to read the registry's event log")
CATALOG_GENERATION = Gauge(f"{PREFIX}_catalog_generation",
                           "Changes of the definition catalog seen since start")

_STATUS_COUNTERS = {status: FEATURE_VALUES.labels(status=status) for status in STATUSES}


def count_statuses(rows: Sequence[Sequence[Status]]) -> None:
    # Nearly every value is PRESENT: count those with C-speed list.count and tally the few
    # others one by one only when there are any.
    present = sum(row.count(PRESENT) for row in rows)
    total = sum(len(row) for row in rows)
    if present:
        _STATUS_COUNTERS[PRESENT].inc(present)
    if present < total:
        others = collections.Counter(s for s in chain.from_iterable(rows) if s != PRESENT)
        for status, count in others.items():
            _STATUS_COUNTERS[status].inc(count)


_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}


def _series(method: str, path: str, status: str) -> tuple[Counter, Histogram]:
    key = (method, path, status)
    if key not in _children:  # .labels() costs more than the rest of the bookkeeping
        _children[key] = (REQUESTS.labels(*key), REQUEST_DURATION.labels(*key))
    return _children[key]


def request_metrics(app: ASGIApp) -> ASGIApp:
    """Litestar middleware counting and timing each request by route template and status.

    (Litestar's PrometheusMiddleware builds a Request and label dicts per request: a tenth
    of a single-entity read.)
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = str(scope.get("method", "?"))
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def observe_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, observe_status)
        finally:
            observe(method, scope.get("path_template", "?"), status, started)

    return middleware


def observe(method: str, path_template: str, status: int, started: float) -> None:
    """Count one request and its time since ``started`` (a ``time.perf_counter()``)."""
    count, duration = _series(method, path_template, str(status))
    count.inc()
    duration.observe(time.perf_counter() - started)
