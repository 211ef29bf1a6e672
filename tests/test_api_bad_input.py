"""Malformed input the schemathesis run does not generate, on the real server: each is a 4xx in the
API's error shape, never a 500, and never silently changed on its way to a model.

schemathesis (test_api_schemathesis.py) covers the catalogue routes from the OpenAPI document with
well-formed JSON; here: the task and inference routes, which it leaves out, bodies that are not JSON
(NaN, Infinity, non-UTF-8, truncated), path ids with odd percent-encodings and list queries with odd
values.  The task routes need no broker for these: a body is checked before anything is queued (the
app's broker URL points at a closed port).
"""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest

from api_helpers import API_KEYS as CATALOG_KEYS
from api_helpers import BOTH_KEY, make_catalog, running
from async_helpers import API_KEYS, DEV_KEY, async_catalog
from sgp_infra.api import create_app


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    app = create_app(async_catalog(), api_keys=API_KEYS, nats_url="nats://127.0.0.1:1")
    with running(app) as url, httpx.Client(base_url=url, headers={"x-api-key": DEV_KEY}, timeout=10) as c:
        yield c


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


@pytest.mark.parametrize("args", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b'{"x": [1, NaN]}'])
def test_a_task_with_numbers_json_has_not_is_422_not_queued_as_null(client: httpx.Client, args: bytes) -> None:
    response = client.post("/v1/async-tasks", params={"model_endpoint_id": "jobs"},
                           content=b'{"args": ' + args + b"}", headers={"content-type": "application/json"})
    body = error_of(response, 422)
    assert "not valid JSON" in body["detail"]


@pytest.mark.parametrize("raw", [b"\xff\xfe{", b"{", b"[]", b"null", b'"args"'])
def test_a_task_body_that_is_not_a_json_object_is_422(client: httpx.Client, raw: bytes) -> None:
    response = client.post("/v1/async-tasks", params={"model_endpoint_id": "jobs"}, content=raw,
                           headers={"content-type": "application/json"})
    error_of(response, 422)


@pytest.mark.parametrize("url", ["http://[::1", "http://", "https:///path", "http://host:99999/", "http://host:x/",
                                 "ftp://host/", 5])
def test_an_unusable_callback_url_is_422_when_the_task_is_sent(client: httpx.Client, url: Any) -> None:
    # The forwarder calls it when the task ends, where a bad URL could only be logged.
    response = client.post("/v1/async-tasks", params={"model_endpoint_id": "jobs"},
                           json={"args": {}, "callback_url": url})
    body = error_of(response, 422)
    assert "callback_url" in body["detail"]


# -- the catalogue and inference routes ---------------------------------------------------------

CATALOG = make_catalog(2, 1)


@pytest.fixture(scope="module")
def sgp() -> Iterator[httpx.Client]:
    """The dev catalogue with inference; every model's backend is a closed port (nothing here reaches one)."""
    app = create_app(CATALOG, api_keys=CATALOG_KEYS, stack="dev",
                     backends={name: "http://127.0.0.1:9" for name in CATALOG.models})
    with running(app) as url, httpx.Client(base_url=url, headers={"x-api-key": BOTH_KEY}, timeout=10) as c:
        yield c


def echo_deployment() -> str:
    return CATALOG.models["echo"].id


ODD_IDS = ["%00", "%ff", "%2F", "..%2F..", "a" * 4000, "%e2%82", "%25", "%20", "%0d%0aX-Injected:%201", "%", "a%"]


@pytest.mark.parametrize("path", ["/v4/models/{}", "/v4/model-templates/{}", "/v4/model-groups/{}",
                                  "/v4/models/{}/deployments", "/v5/models/{}", "/v1/async-tasks/{}"])
def test_odd_path_ids_are_a_json_4xx(sgp: httpx.Client, path: str) -> None:
    for odd in ODD_IDS:
        response = sgp.get(path.format(odd))
        assert 400 <= response.status_code < 500, (odd, response.text[:200])
        assert response.json()["status"] == response.status_code
        assert "X-Injected" not in response.headers


@pytest.mark.parametrize("query", ["page=0", "page=-1", "page=99999999999999999999999", "limit=0", "limit=100000",
                                   "limit=abc", "limit=NaN", "limit=1.5", "page=%00", "sort_by=%ff",
                                   "sort_order=sideways", "%ff=1", "limit=1&limit=2"])
def test_odd_list_queries_are_a_json_4xx_or_ignored(sgp: httpx.Client, query: str) -> None:
    for route in ("/v4/models", "/v4/model-templates", "/v4/model-deployments", "/v5/models"):
        response = sgp.get(f"{route}?{query}")
        assert response.status_code < 500, (route, query, response.text[:200])
        if response.status_code >= 400:
            assert response.json()["status"] == response.status_code


INFERENCE_BODIES = {
    "NaN": b'{"prompt": "hi", "temperature": NaN}',
    "Infinity": b'{"prompt": "hi", "temperature": Infinity}',
    "beyond a double": b'{"prompt": "hi", "temperature": 1e999}',
    "non-UTF-8": b'{"prompt": "\xff\xfe"}',
    "lone surrogate": b'{"prompt": "\\ud800"}',
    "truncated": b'{"prompt": ',
    "array": b"[1]",
    "null": b"null",
    "wrong type": b'{"prompt": 5}',
    "null field": b'{"prompt": null}',
    "duplicate key, last wrong": b'{"prompt": "a", "prompt": 5}',
}


@pytest.mark.parametrize("name", INFERENCE_BODIES)
@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_malformed_inference_bodies_are_422(sgp: httpx.Client, name: str, content_type: str) -> None:
    raw = INFERENCE_BODIES[name]
    v5 = b'{"model": "echo", ' + raw[1:] if raw.startswith(b"{") else raw
    for route, body in ((f"/v4/models/{echo_deployment()}/completions", raw), ("/v5/completions", v5)):
        response = sgp.post(route, content=body, headers={"content-type": content_type})
        error_of(response, 422)
