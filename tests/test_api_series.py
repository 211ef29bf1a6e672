"""The plain-number series (``sgp_infra.api.series``) print exactly what the
``prometheus_client`` Counter and Histogram they replace printed."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from sgp_infra.api.inference.metrics import InferenceMetrics
from sgp_infra.api.metrics import BUCKETS, Metrics
from sgp_infra.api.series import CounterSeries, HistogramSeries

CREATED = re.compile(r"^(\S+_created\{[^}]*\}) \S+$")


def without_created_values(text: str) -> list[str]:
    """Exposition lines with the ``_created`` timestamps blanked (they differ by construction time)."""
    return [CREATED.sub(r"\1 <t>", line) for line in text.splitlines()]


def observations() -> list[tuple[tuple[str, str], float]]:
    # Values on bucket bounds, between them, below the first and above the last.
    values = [0.0, 0.0005, 0.001, 0.0011, 0.0025, 0.07, 0.1, 1.0, 7.5, 30.0, 60.0, 61.0, 1e9]
    return [(("POST", "/b"), v) for v in values] + [(("GET", "/a"), v * 2) for v in values[::3]]


@pytest.mark.parametrize("generate", [generate_latest, generate_openmetrics], ids=["text", "openmetrics"])
def test_exposition_matches_prometheus_client(generate) -> None:  # type: ignore[no-untyped-def]
    reference, ours = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    ref_counter = Counter("demo_requests_total", "Requests", ["method", "route", "status"], registry=reference)
    ref_hist = Histogram("demo_duration_seconds", "Durations", ["method", "route"], buckets=BUCKETS,
                         registry=reference)
    counter = CounterSeries("demo_requests_total", "Requests", ["method", "route", "status"], registry=ours)
    hist = HistogramSeries("demo_duration_seconds", "Durations", ["method", "route"], BUCKETS, registry=ours)
    for labels, value in observations():
        ref_hist.labels(*labels).observe(value)
        hist.observe(labels, value)
    for method, route, status, times in (("POST", "/b", 200, 3), ("GET", "/a", 404, 1), ("POST", "/b", 499, 2)):
        for _ in range(times):
            ref_counter.labels(method, route, str(status)).inc()
            counter.inc((method, route, status))  # ints are shown with str(), as labels() does
    ref_counter.labels("GET", "/a", "404").inc(2.5)
    counter.inc(("GET", "/a", 404), 2.5)
    expected = without_created_values(generate(reference).decode())
    assert without_created_values(generate(ours).decode()) == expected
    assert any("_created" in line for line in expected)  # the comparison covers them
    assert counter.value(("POST", "/b", 200)) == 3 and counter.value(("PUT", "/x", 200)) == 0
    assert hist.count(("POST", "/b")) == 13 and hist.count(("PUT", "/x")) == 0


def test_registry_sees_each_name_once() -> None:
    """Registration checks for clashes with the family's names, as prometheus_client's own metrics do."""
    registry = CollectorRegistry(auto_describe=True)
    CounterSeries("demo_total", "x", ["a"], registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("demo", "x", ["a"], registry=registry)
    HistogramSeries("demo_seconds", "x", ["a"], [1.0], registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Histogram("demo_seconds", "x", ["a"], registry=registry)


def test_wrong_label_count_and_buckets_are_rejected() -> None:
    counter = CounterSeries("demo_total", "x", ["a", "b"])
    with pytest.raises(ValueError, match="1 label values for labels"):
        counter.inc(("only-one",))
    assert counter.values == {}
    with pytest.raises(ValueError, match="strictly ascending"):
        HistogramSeries("h", "x", [], [1.0, 0.5])
    assert HistogramSeries("h", "x", [], [0.5, float("inf")]).bounds == (0.5, float("inf"))


def test_service_metrics_keep_their_names_and_labels() -> None:
    """The families ``/metrics`` has always shown, with their label names, from both metric owners."""
    metrics = Metrics()
    inference = InferenceMetrics(metrics.registry)
    metrics.record("POST", "/v4/models/m/completions", "/v4/models/{model_deployment_id}/completions", 200, 0.003)
    inference.requests.inc(("m", "completion", 200))
    inference.errors.inc(("m", "read_timeout"))
    inference.upstream_latency.observe(("m",), 0.002)
    inference.cold_start_wait.observe(("m",), 12.0)
    inference.wakeups.inc(("m",))
    text = generate_latest(metrics.registry).decode()
    for line in (
        'sgp_infra_api_requests_total{method="POST",route="/v4/models/{model_deployment_id}/completions",'
        'status="200"} 1.0',
        'sgp_infra_api_request_duration_seconds_bucket{le="0.005",method="POST",'
        'route="/v4/models/{model_deployment_id}/completions"} 1.0',
        'sgp_infra_model_requests_total{code="200",model="m",operation="completion"} 1.0',
        'sgp_infra_model_errors_total{kind="read_timeout",model="m"} 1.0',
        'sgp_infra_model_upstream_latency_seconds_count{model="m"} 1.0',
        'sgp_infra_model_cold_start_wait_seconds_bucket{le="30.0",model="m"} 1.0',
        'sgp_infra_model_wakeups_total{model="m"} 1.0',
        "# TYPE sgp_infra_model_upstream_latency_seconds histogram",
        "# TYPE sgp_infra_model_wakeups_total counter",
    ):
        assert line in text, line
