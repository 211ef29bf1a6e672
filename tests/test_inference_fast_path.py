"""The inference fast path answers exactly as FastAPI's router did: same
routes, auth, error shape, metric labels; everything else falls through."""

from __future__ import annotations

from typing import Iterator

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
    assert path.match("/v4/models/m/completions") == ("/v4/models/{model_deployment_id}/completions", ("m",))
    assert path.match("/v4/models/m/deployments/d/execute")[1] == ("m", "d")  # type: ignore[index]
    assert path.match("/v5/inference") == ("/v5/inference", ())
    for other in ("/v4/models//completions", "/v4/models/m/completions/", "/v4/models/m", "/v5/models",
                  "/v4/models/m/deployments//execute", "/v5/chat/completions/models"):
        assert path.match(other) is None


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
