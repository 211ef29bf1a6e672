"""Inference metrics: prometheus_client's own Counter, Histogram and Gauge,
registered on the app's registry so ``/metrics`` shows them.

``sgp_infra_model_requests_in_flight{model=<object_name>}`` is the contract
with the autoscaler: the KEDA trigger the planner writes sums it across API
replicas, so a request held for a cold model already counts and wakes it.
Under prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set,
several worker processes per pod) the gauge is ``livesum``: ``/metrics``
shows the sum over the live workers, so KEDA's query is the same either way.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
COLD_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)

#: Error kinds counted in ``sgp_infra_model_errors_total{kind}``.
ERROR_KINDS = ("connect", "connect_timeout", "read_timeout", "protocol", "bad_response", "too_large",
               "upstream_5xx", "upstream_4xx", "unavailable", "over_capacity", "cold_start_hold",
               "cold_start_timeout", "model_failed", "client_disconnect", "cancelled")

IN_FLIGHT = "sgp_infra_model_requests_in_flight"
IN_FLIGHT_HELP = "Inference requests in flight in this API replica, held cold-start waits included"


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.in_flight = Gauge(IN_FLIGHT, IN_FLIGHT_HELP, ["model"], registry=registry,
                               multiprocess_mode="livesum")
        self.requests = Counter("sgp_infra_model_requests_total", "Inference requests answered, by outcome",
                                ["model", "operation", "code"], registry=registry)
        self.errors = Counter("sgp_infra_model_errors_total", "Inference failures, by kind", ["model", "kind"],
                              registry=registry)
        self.upstream_latency = Histogram("sgp_infra_model_upstream_latency_seconds",
                                          "Time from sending a request to a model until its response headers",
                                          ["model"], registry=registry, buckets=LATENCY_BUCKETS)
        self.cold_start_wait = Histogram("sgp_infra_model_cold_start_wait_seconds",
                                         "Time requests were held waiting for a model with no ready pods",
                                         ["model"], registry=registry, buckets=COLD_BUCKETS)
        self.wakeups = Counter("sgp_infra_model_wakeups_total",
                               "Cold-start wake-ups started (concurrent waiters share one)", ["model"],
                               registry=registry)
        self.routing = RoutingMetrics(registry)
        # The labelled children of the per-call series, by label values.  ``labels()`` returns the same
        # child each time; it is looked up once per label set here, not on every call (a lock and a tuple each).
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def in_flight_of(self, model: str) -> Any:
        """``model``'s in-flight gauge."""
        return self._child(self.in_flight, model)

    def upstream_latency_of(self, model: str) -> Any:
        """``model``'s upstream latency histogram."""
        return self._child(self.upstream_latency, model)

    def answered(self, model: str, operation: str, code: int, error_kind: str | None = None) -> None:
        """Count one finished call (and its failure's kind, if any)."""
        self._child(self.requests, model, operation, str(code)).inc()
        if error_kind:
            self._child(self.errors, model, error_kind).inc()


#: ``sgp_infra_model_routing_total{outcome}`` values: how each attempt's destination was picked.
ROUTING_OUTCOMES = ("hit", "spill", "least-load", "service")


class RoutingMetrics:
    """Routing across a model's pods (``docs/inference.md``, "Routing across replicas").

    ``pod`` is the pod's address without the scheme (``10.1.2.3:8000``).  A pod's
    series are removed (:meth:`forget`) once it has left the model's ready set and
    its last call from this process has ended, so a fleet that rolls over does not
    pile up series; in multiprocess mode they stay (prometheus_client cannot remove
    a series there).
    """

    def __init__(self, registry: CollectorRegistry):
        self.pod_in_flight = Gauge("sgp_infra_model_pod_requests_in_flight",
                                   "Inference calls in flight from this API replica, per model pod",
                                   ["model", "pod"], registry=registry, multiprocess_mode="livesum")
        self.pod_requests = Counter("sgp_infra_model_pod_requests_total",
                                    "Inference attempts sent to each model pod", ["model", "pod"],
                                    registry=registry)
        self.routing = Counter("sgp_infra_model_routing_total",
                               "How attempts were routed: hit (the prefix's own pod), spill (a later pod on "
                               "the ring), least-load, service (no pod known or the service strategy)",
                               ["model", "outcome"], registry=registry)

    def forget(self, model: str, pod: str) -> None:
        """Remove ``pod``'s series of ``model`` (a no-op for series never created, and in
        prometheus_client's multiprocess mode, where removal is not implemented)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"):
            return
        for metric in (self.pod_in_flight, self.pod_requests):
            metric.remove(model, pod)
