"""``Gateway`` bookkeeping that the request paths rely on (no servers needed)."""

from __future__ import annotations

import dataclasses

import pytest

from prometheus_client import CollectorRegistry

from sgp_infra.api.inference import InferenceSettings
from sgp_infra.api.inference.gateway import Gateway
from sgp_infra.api.inference.metrics import InferenceMetrics
from sgp_infra.api.inference.upstream import UpstreamError
from sgp_infra.api.status import StaticStatus
from sgp_infra.catalog import ModelInference
from test_inference_helpers import make_catalog


def gateway(settings: InferenceSettings) -> Gateway:
    return Gateway(settings, InferenceMetrics(CollectorRegistry()), StaticStatus(), {}, "ns")


def test_timeouts_come_from_the_catalogue_inference_extension() -> None:
    catalog = make_catalog(inference={"sgp-echo": {"connect_timeout_seconds": 2, "read_timeout_seconds": 30,
                                                   "cold_start_hold_seconds": 10}})
    gw = gateway(InferenceSettings(cold_start_margin=60))
    echo = gw.timeouts(catalog.models["sgp-echo"])
    assert (echo.connect, echo.read, echo.hold) == (2, 30, 10)
    assert echo.cold_start == catalog.models["sgp-echo"].readiness_initial_delay_seconds + 60
    # defaults: 5 s connect, 300 s read (60 for embeddings), 50 s hold
    chat, embed = gw.timeouts(catalog.models["sgp-chat"]), gw.timeouts(catalog.models["sgp-embed"])
    assert (chat.connect, chat.read, chat.hold) == (5, 300, 50)
    assert embed.read == 60
    # a call may lower its read timeout, never raise it
    assert gw.timeouts(catalog.models["sgp-echo"], read=5).read == 5
    assert gw.timeouts(catalog.models["sgp-echo"], read=500).read == 30


def test_an_updated_model_gets_its_own_timeouts() -> None:
    gw = gateway(InferenceSettings())
    model = make_catalog().models["sgp-echo"]
    updated = dataclasses.replace(model, inference=ModelInference(read_timeout_seconds=7))
    assert gw.timeouts(updated).read == 7 and gw.timeouts(model).read == 300


def test_admission_counts_in_flight_and_caps_at_per_worker_times_max_workers() -> None:
    registry = CollectorRegistry()
    gw = Gateway(InferenceSettings(), InferenceMetrics(registry), StaticStatus(), {}, "ns")
    tiny = make_catalog().models["tiny"]  # per_worker 1 x max_workers 2
    label = tiny.object_name

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, {"model": label, **labels}) or 0.0

    slots = [gw.admit(tiny, "completion") for _ in range(2)]
    assert gw.in_flight[label] == 2 and value("sgp_infra_model_requests_in_flight") == 2
    with pytest.raises(UpstreamError) as info:
        gw.admit(tiny, "completion")
    assert (info.value.status, info.value.kind, info.value.retry_after) == (429, "over_capacity", 1)
    assert value("sgp_infra_model_requests_total", operation="completion", code="429") == 1
    slots[0].finish(200)
    slots[0].finish(500)  # counted once only
    assert gw.in_flight[label] == 1 and value("sgp_infra_model_requests_in_flight") == 1
    assert value("sgp_infra_model_requests_total", operation="completion", code="200") == 1
    assert value("sgp_infra_model_requests_total", operation="completion", code="500") == 0
