"""Prometheus metrics and the access line, in one ASGI middleware.

A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it
adds no task or stream wrapping per request.  It times each request once and
records it twice: in the metrics below and in the access line
(:func:`~.access_log.log_request`).  Requests are labelled by route *template* (``/v4/models/{model_id}``),
never by raw path, so label cardinality stays bounded; unmatched paths share
the ``unmatched`` label.

Each app has its own :class:`CollectorRegistry` (``app.state.metrics.registry``);
other parts of the service (inference routing) register their metrics on it so
``/metrics`` shows everything.  With ``PROMETHEUS_MULTIPROC_DIR`` set (several
worker processes), prometheus_client keeps every value in files in that
directory and ``/metrics`` serves :func:`exposition_registry`: a
``MultiProcessCollector`` over all the workers' files.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .access_log import access_log_on, log_request, route_of


BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("sgp_infra_api_requests_total", "HTTP requests answered, by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("sgp_infra_api_request_duration_seconds", "Time to answer a request, by route",
                                 ["method", "route"], registry=self.registry, buckets=BUCKETS)
        self._exposed = exposition_registry(self.registry)
        #: (counter child, histogram child) by (method, route, status): ``labels()`` looked up once per label set.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def exposed(self) -> CollectorRegistry:
        """The registry ``/metrics`` serves: see :func:`exposition_registry`."""
        return self._exposed

    def record(self, method: str, path: str, route: str, status: int, elapsed: float) -> None:
        """Count one answered request and observe its latency (the access line is ``access_log``'s)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(method, route, str(status)),
                                              self.latency.labels(method, route))
        children[0].inc()
        children[1].observe(elapsed)


def exposition_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """What ``/metrics`` shows: ``registry`` itself, or, in prometheus_client's multiprocess mode
    (``PROMETHEUS_MULTIPROC_DIR`` set), every worker's values merged from that directory (counters and
    histograms summed, the in-flight gauge summed over live workers)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return registry
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=path)
    return merged


class MetricsMiddleware:
    """Counts and times every HTTP request and writes its access line; see the module doc."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        recorded = False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self.metrics.record(scope["method"], scope["path"], route_of(scope), status,
                                    time.perf_counter() - start)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Counted before the last bytes go out: a client that reads /metrics right after its
                # answer sees its own request counted.
                record()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            record()  # no complete answer (an error, a client that left): counted as what was sent, else 500
            if access_log_on():
                log_request(scope, route_of(scope), status, time.perf_counter() - start)
