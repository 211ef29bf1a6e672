"""Property-based run over the service's own OpenAPI document: no input yields a 5xx."""

from __future__ import annotations

from typing import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from sgp_infra.api import create_app

from api_helpers import API_KEYS, BOTH_KEY, make_catalog, running


APP = create_app(make_catalog(5, 2), api_keys=API_KEYS, stack="dev", include_inference=False)
# The document is read in-process; the requests go to the real server below.
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running(APP) as url:
        yield url


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, base_url: str) -> None:
    for headers in ({"x-api-key": BOTH_KEY}, {}):
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"
        if response.status_code >= 400:
            body = response.json()
            assert body["status"] == response.status_code and body["detail"]
