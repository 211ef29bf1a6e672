"""Inference metrics, registered on the app's registry so ``/metrics`` shows them.

``sgp_infra_model_requests_in_flight{model=<object_name>}`` is the contract
with the autoscaler: the KEDA trigger the planner writes sums it across API
replicas, so a request held for a cold model already counts and wakes it.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..series import CounterSeries, HistogramSeries

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
COLD_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)

#: Error kinds counted in ``sgp_infra_model_errors_total{kind}``.
ERROR_KINDS = ("connect", "connect_timeout", "read_timeout", "protocol", "bad_response", "too_large",
               "upstream_5xx", "upstream_4xx", "unavailable", "over_capacity", "cold_start_timeout",
               "model_failed", "client_disconnect")


IN_FLIGHT = "sgp_infra_model_requests_in_flight"
IN_FLIGHT_HELP = "Inference requests in flight in this API replica, held cold-start waits included"


class InFlightGauge(Collector):
    """``sgp_infra_model_requests_in_flight{model}``, read at scrape time from the
    gateway's own per-model counters (the same ints behind the 429 cap).

    Why not a ``prometheus_client.Gauge``: every request did an ``inc()`` and a
    ``dec()`` on it, each taking a lock, to mirror a count the gateway keeps
    anyway.  The exposition is the same: a gauge with one sample per model
    that has had a request, in first-request order, as a float.
    """

    def __init__(self, counts: dict[str, int]):
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(IN_FLIGHT, IN_FLIGHT_HELP, labels=["model"])
        for model, count in list(self.counts.items()):
            family.add_metric([model], float(count))
        yield family


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry):
        #: Requests in flight per model object name: the gateway's counters, exported as the gauge.
        self.in_flight_counts: dict[str, int] = {}
        self.in_flight = InFlightGauge(self.in_flight_counts)
        registry.register(self.in_flight)
        # Plain-number series, not prometheus_client's Counter and Histogram: see ``..series``.
        self.requests = CounterSeries("sgp_infra_model_requests_total", "Inference requests answered, by outcome",
                                      ["model", "operation", "code"], registry=registry)
        self.errors = CounterSeries("sgp_infra_model_errors_total", "Inference failures, by kind",
                                    ["model", "kind"], registry=registry)
        self.upstream_latency = HistogramSeries("sgp_infra_model_upstream_latency_seconds",
                                                "Time from sending a request to a model until its response headers",
                                                ["model"], LATENCY_BUCKETS, registry=registry)
        self.cold_start_wait = HistogramSeries("sgp_infra_model_cold_start_wait_seconds",
                                               "Time requests were held waiting for a model with no ready pods",
                                               ["model"], COLD_BUCKETS, registry=registry)
        self.wakeups = CounterSeries("sgp_infra_model_wakeups_total",
                                     "Cold-start wake-ups started (concurrent waiters share one)", ["model"],
                                     registry=registry)
