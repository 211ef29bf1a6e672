"""Prometheus metrics, in one ASGI middleware (the access line is ``access_log``'s).

A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it
adds no task or stream wrapping per request, which matters for the list
benchmark.  Requests are labelled by route *template* (``/v4/models/{model_id}``),
never by raw path, so label cardinality stays bounded; unmatched paths share
the ``unmatched`` label.

Each app has its own :class:`CollectorRegistry` (``app.state.metrics.registry``);
other parts of the service (inference routing) register their metrics on it so
``/metrics`` shows everything.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .series import CounterSeries, HistogramSeries

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Plain-number series, not prometheus_client's Counter and Histogram: see ``series``.
        self.requests = CounterSeries("sgp_infra_api_requests_total", "HTTP requests answered, by route and status",
                                      ["method", "route", "status"], registry=self.registry)
        self.latency = HistogramSeries("sgp_infra_api_request_duration_seconds",
                                       "Time to answer a request, by route", ["method", "route"], BUCKETS,
                                       registry=self.registry)

    def record(self, method: str, path: str, route: str, status: int, elapsed: float) -> None:
        """Count one answered request and observe its latency."""
        self.requests.inc((method, route, status))
        self.latency.observe((method, route), elapsed)


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.record(scope["method"], scope["path"], _route_of(scope), status,
                                time.perf_counter() - start)
