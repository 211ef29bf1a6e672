"""The inference fast path answers exactly as FastAPI's router did: same
routes, auth, error shape, metric labels; everything else falls through."""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest

from sgp_infra.api import create_app
from sgp_infra.api.inference import fast
from sgp_infra.api.inference.routes import FAST_ROUTES

from api_helpers import ACME_KEY, API_KEYS, make_catalog, running


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    app = create_app(make_catalog(extra_acme=0, extra_other=0), api_keys=API_KEYS, stack="dev")
    with running(app) as url:
        yield url


def test_every_fast_route_is_a_router_route() -> None:
    app = create_app(make_catalog(extra_acme=0, extra_other=0), api_keys=API_KEYS)
    path = fast.FastPath(app=app.router, api=app)
    assert set(path._table()) == FAST_ROUTES
    assert fast.match_fast_route("/v4/models/m/completions") == ("/v4/models/{model_deployment_id}/completions", ("m",))
    assert fast.match_fast_route("/v4/models/m/deployments/d/execute")[1] == ("m", "d")  # type: ignore[index]
    assert fast.match_fast_route("/v5/inference") == ("/v5/inference", ())
    for other in ("/v4/models//completions", "/v4/models/m/completions/", "/v4/models/m", "/v5/models",
                  "/v4/models/m/deployments//execute", "/v5/chat/completions/models"):
        assert fast.match_fast_route(other) is None


def test_fast_route_errors_keep_the_api_shape_and_labels(base: str) -> None:
    r = httpx.post(f"{base}/v4/models/nope/completions", json={"prompt": "x"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "x-api-key"
    assert set(r.json()) == {"status", "error", "detail"}
    r = httpx.post(f"{base}/v4/models/nope/completions", json={"prompt": "x"}, headers={"x-api-key": ACME_KEY})
    assert r.status_code == 404 and "no model 'nope'" in r.json()["detail"]
    r = httpx.post(f"{base}/v5/inference", content=b"[1]", headers={"x-api-key": ACME_KEY})
    assert r.status_code == 422 and r.json()["detail"] == "invalid request: body: must be a JSON object"
    metrics = httpx.get(f"{base}/metrics").text
    assert ('sgp_infra_api_requests_total{method="POST",route="/v4/models/{model_deployment_id}/completions",'
            'status="404"} 1.0') in metrics
    assert 'sgp_infra_api_requests_total{method="POST",route="/v5/inference",status="422"} 1.0' in metrics


def test_other_methods_and_paths_still_go_through_fastapi(base: str) -> None:
    r = httpx.get(f"{base}/v4/models/nope/completions", headers={"x-api-key": ACME_KEY})
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    r = httpx.post(f"{base}/v4/models/a/b/c/completions", headers={"x-api-key": ACME_KEY})
    assert r.status_code == 404 and r.json()["detail"].startswith("no route POST")


class _FakeTelemetry:
    """Stands in for FastAPI's NativeTelemetry: counts the per-request check and the requests it wraps."""

    def __init__(self, on: bool):
        self.on = on
        self.checks = 0
        self.wrapped = 0

    def enabled(self) -> bool:
        self.checks += 1
        return self.on

    async def __call__(self, *, app: Any, scope: Any, receive: Any, send: Any, legacy_otel: bool) -> None:
        self.wrapped += 1
        await app(scope, receive, send)


@pytest.mark.parametrize("on", [False, True])
def test_opentelemetry_check_is_made_once_a_second_and_honoured(on: bool) -> None:
    app = create_app(make_catalog(extra_acme=0, extra_other=0), api_keys=API_KEYS)
    fake = _FakeTelemetry(on)
    app._native_telemetry = fake  # type: ignore[attr-defined]
    with running(app) as url:
        for _ in range(5):
            assert httpx.get(f"{url}/healthz").status_code == 200
        r = httpx.post(f"{url}/v4/models/nope/completions", json={}, headers={"x-api-key": ACME_KEY})
        assert r.status_code == 404
    if on:  # a provider is configured: every request goes through FastAPI's telemetry wrapper, as before
        assert fake.wrapped >= 6
    else:  # none: asked once (not once for each of the 6 requests), and nothing wrapped
        assert 1 <= fake.checks <= 2 and fake.wrapped == 0


def test_model_answers_are_the_same_response_json_response_builds() -> None:
    from sgp_infra.api.common import json_response
    from sgp_infra.api.inference.routes import _JsonAnswer

    for body in ({"completions": [["hi", ["echo: hi"]]], "finish_reason": "stop"}, [1, "two"], "é", None):
        lean, general = _JsonAnswer(body), json_response(body)
        assert (lean.status_code, lean.body, lean.raw_headers, lean.background) == \
            (general.status_code, general.body, general.raw_headers, general.background)


def test_in_flight_gauge_exposition_is_a_prometheus_gauge_s() -> None:
    """The collector over the gateway's counters prints what the Gauge it replaced printed."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    from sgp_infra.api.inference.metrics import IN_FLIGHT, IN_FLIGHT_HELP, InferenceMetrics

    reference = CollectorRegistry(auto_describe=True)
    gauge = Gauge(IN_FLIGHT, IN_FLIGHT_HELP, ["model"], registry=reference)
    gauge.labels("b").inc()
    gauge.labels("a").inc(2)
    gauge.labels("b").dec()
    ours = CollectorRegistry(auto_describe=True)
    metrics = InferenceMetrics(ours)
    metrics.in_flight_counts.update({"b": 0, "a": 2})
    mine = [line for line in generate_latest(ours).decode().splitlines() if IN_FLIGHT in line]
    assert mine == generate_latest(reference).decode().splitlines()
