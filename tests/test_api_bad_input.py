"""Malformed input the schemathesis run does not generate, on the real server: each is a 4xx in the
API's error shape, never a 500, and never silently changed on its way to a model.

The task routes need no broker for these: a body is checked before anything is queued (the app's
broker URL points at a closed port).
"""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest

from api_helpers import running
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
