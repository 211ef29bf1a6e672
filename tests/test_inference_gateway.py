"""``Gateway`` bookkeeping that the request paths rely on (no servers needed)."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry

from sgp_infra.api.inference import InferenceSettings
from sgp_infra.api.inference.gateway import Gateway
from sgp_infra.api.inference.metrics import InferenceMetrics
from sgp_infra.api.status import StaticStatus
from test_inference_helpers import make_catalog


def test_timeouts_are_memoised_per_model_object_and_follow_an_updated_model() -> None:
    settings = InferenceSettings(read_timeout_generate=300, read_timeout_short=30)
    gw = Gateway(settings, InferenceMetrics(CollectorRegistry()), StaticStatus(), {}, "ns")
    model = make_catalog().models["sgp-echo"]
    first = gw.timeouts(model)
    assert first.read == 300 and gw.timeouts(model) is first
    # an update through the API replaces the (immutable) model: its timeouts are worked out anew
    updated = dataclasses.replace(model, model_type="EMBEDDING")
    assert gw.timeouts(updated).read == 30
    assert gw.timeouts(updated) == settings.timeouts(updated)
    assert gw.timeouts(model).read == 300  # and the old object still gets its own
    assert gw.timeouts(model, read=5).read == 5
