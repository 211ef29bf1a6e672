"""Status mapping on Deployment/Pod objects in kubectl's JSON shape, and degradation.

The objects in tests/data/deployments/ are written in the exact shape
``kubectl get -o json`` prints (no cluster is available to record from here);
:func:`status_from_deployment` reads only fields documented in apps/v1.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sgp_infra.api import create_app
from sgp_infra.api.kube_status import statuses_from_objects
from sgp_infra.api.status import CachedStatus, ModelStatus, ProbeStatus, status_from_deployment

from api_helpers import ACME_KEY, API_KEYS, make_catalog, running

DATA = Path(__file__).parent / "data" / "deployments"


def run(coro: Any) -> Any:
    """Run a coroutine on a private loop: ``asyncio.run`` would unset the main
    thread's event loop, which Pulumi's mocks in later tests rely on."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def load(name: str) -> Any:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.mark.parametrize("case, status, reason_part", [
    ("ready", "ready", None),
    ("rolling", "deploying", "rolling out: 1 of 2"),
    ("timeout", "deployment_timeout", "timed out progressing"),
    ("crashloop", "deploying", "0 of 1 pods available"),
    ("scaled_to_zero", "ready", "scaled to zero"),
    ("unobserved", "deploying", "not yet observed"),
    ("starting", "deploying", "0 of 1 pods available"),
])
def test_deployment_status(case: str, status: str, reason_part: str | None) -> None:
    got = status_from_deployment(load(case))
    assert got.status == status
    assert got.created_at == "2024-05-01T10:00:00Z"
    if reason_part is None:
        assert got.reason is None and got.ready_replicas == 2
    else:
        assert reason_part in got.reason


def test_crashlooping_pod_fails_the_model() -> None:
    got = status_from_deployment(load("crashloop"), [load("crashloop_pod")])
    assert got.status == "failed"
    assert "CrashLoopBackOff after 5 restarts" in got.reason and "echo-5d9c-abcde" in got.reason


def test_crashlooping_pod_beside_available_replicas_is_not_a_failure() -> None:
    assert status_from_deployment(load("ready"), [load("crashloop_pod")]).status == "ready"


def test_missing_deployment_is_deploying() -> None:
    assert status_from_deployment(None).status == "deploying"


def test_objects_grouped_by_model_label() -> None:
    out = statuses_from_objects([load("crashloop")], [load("crashloop_pod")])
    assert out["echo"].status == "failed"


class Broken(CachedStatus):
    async def refresh(self) -> dict[str, ModelStatus]:
        raise PermissionError("deployments.apps is forbidden: User \"system:serviceaccount:x\" cannot list")


def test_failing_source_degrades_to_deploying_never_500() -> None:
    source = Broken(interval=3600)
    app = create_app(make_catalog(2, 0), api_keys=API_KEYS, status_source=source)
    with running(app) as url:
        run(source.refresh_once())
        r = httpx.get(f"{url}/v5/models", headers={"x-api-key": ACME_KEY})
        assert r.status_code == 200
        for item in r.json()["items"]:
            assert item["status"] == "deploying"
            assert item["status_reason"].startswith("status unavailable: PermissionError")
        deps = httpx.get(f"{url}/v4/model-deployments", headers={"x-api-key": ACME_KEY}).json()["items"]
        assert all(d["status"] == "DEPLOYING" for d in deps)


def test_probe_status_against_a_real_healthcheck() -> None:
    from fastapi import FastAPI

    model = FastAPI()

    @model.get("/readyz")
    async def ready() -> dict[str, bool]:
        return {"ok": True}

    with running(model) as url:
        source = ProbeStatus({"up": f"{url}/readyz", "down": f"{url}/missing",
                              "gone": "http://127.0.0.1:9/readyz"}, timeout=2)
        assert source.get("up").status == "deploying"  # before the first refresh
        run(source.refresh_once())
    assert source.get("up") == ModelStatus("ready", ready_replicas=1)
    assert source.get("down").status == "deploying" and "answered 404" in source.get("down").reason
    assert "unreachable" in source.get("gone").reason


def test_cluster_creation_time_becomes_created_at() -> None:
    class Fixed(CachedStatus):
        async def refresh(self) -> dict[str, ModelStatus]:
            return statuses_from_objects([load("ready")], [])

    source = Fixed(interval=3600)
    app = create_app(make_catalog(0, 0), api_keys=API_KEYS, status_source=source)
    with running(app) as url:
        h = {"x-api-key": ACME_KEY}
        for _ in range(200):
            if httpx.get(f"{url}/v5/models/echo", headers=h).json()["status"] == "ready":
                break
            run(asyncio.sleep(0.02))
        echo = httpx.get(f"{url}/v5/models/echo", headers=h).json()
        assert echo["status"] == "ready" and echo["created_at"] == "2024-05-01T10:00:00Z"
        tpl = httpx.get(f"{url}/v4/model-templates", headers=h).json()["items"][0]
        assert tpl["created_at"] == "2024-05-01T10:00:00Z"  # its earliest model


def test_list_pages_follow_status_changes() -> None:
    """v5 list pages are cached per status version: a refresh that changes status shows at once."""
    class Flip(CachedStatus):
        def __init__(self) -> None:
            super().__init__(interval=3600)
            self.now = ModelStatus("deploying", "starting")

        async def refresh(self) -> dict[str, ModelStatus]:
            return {"echo": self.now, "t4-embedder": self.now, "transcriber": self.now}

    source = Flip()
    app = create_app(make_catalog(0, 0), api_keys=API_KEYS, status_source=source)
    h = {"x-api-key": ACME_KEY}
    with running(app) as url:
        run(source.refresh_once())
        first = httpx.get(f"{url}/v5/models", headers=h).json()["items"]
        assert {i["status"] for i in first} == {"deploying"}
        source.now = ModelStatus("ready")
        run(source.refresh_once())
        again = httpx.get(f"{url}/v5/models", headers=h).json()["items"]
        assert {i["status"] for i in again} == {"ready"}
