"""``KubeStatus`` against a fake Kubernetes API server on loopback.

The recorded-object tests cover the mapping; this drives the real
kubernetes-asyncio calls: list Deployments and pods with the model label
selector, read the catalogue ConfigMap, and degrade (never raise) when the API
server fails.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from kubernetes_asyncio.client import Configuration

from api_helpers import running
from sgp_infra.api.kube_status import MODEL_SELECTOR, KubeStatus

DATA = Path(__file__).parent / "data" / "deployments"
NS = "sgp-dev"


def recorded(name: str) -> dict[str, Any]:
    obj = json.loads((DATA / f"{name}.json").read_text())
    spec = obj.setdefault("spec", {})
    if obj["kind"] == "Deployment":  # fields the API server always returns
        labels = obj["metadata"]["labels"]
        spec.setdefault("selector", {"matchLabels": labels})
        spec.setdefault("template", {"metadata": {"labels": labels},
                                     "spec": {"containers": [{"name": "model", "image": "ghcr.io/acme/m:1"}]}})
    else:
        spec.setdefault("containers", [{"name": "model", "image": "ghcr.io/acme/m:1"}])
        for container in obj.get("status", {}).get("containerStatuses", []):
            container.setdefault("image", "ghcr.io/acme/m:1")
            container.setdefault("imageID", "")
    return obj


def relabel(obj: dict[str, Any], name: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["name"] = name
    for labels in (obj["metadata"]["labels"], obj["spec"].get("selector", {}).get("matchLabels", {})):
        labels["sgp-infra.io/model-name"] = labels["app.kubernetes.io/instance"] = name
    return obj


def fake_api_server(fail: bool = False) -> tuple[FastAPI, list[str]]:
    app = FastAPI()
    selectors: list[str] = []
    deployments = [relabel(recorded("ready"), "echo"), relabel(recorded("crashloop"), "t4-embedder")]
    pods = [relabel(recorded("crashloop_pod"), "t4-embedder")]

    @app.get(f"/apis/apps/v1/namespaces/{NS}/deployments")
    async def list_deployments(request: Request) -> Any:
        selectors.append(request.query_params.get("labelSelector", ""))
        if fail:
            return JSONResponse({"kind": "Status", "code": 403, "message": "forbidden"}, status_code=403)
        return {"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": deployments}

    @app.get(f"/api/v1/namespaces/{NS}/pods")
    async def list_pods(request: Request) -> Any:
        selectors.append(request.query_params.get("labelSelector", ""))
        return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}

    @app.get(f"/api/v1/namespaces/{NS}/configmaps/sgp-infra-catalog")
    async def catalog_configmap() -> Any:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "sgp-infra-catalog", "namespace": NS,
                             "creationTimestamp": "2024-04-30T09:00:00Z"}, "data": {}}

    return app, selectors


def refreshed(base: str) -> KubeStatus:
    config = Configuration(host=base)
    status = KubeStatus(NS, configuration=config)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(status.refresh_once())
        loop.run_until_complete(status.stop())
    finally:
        loop.close()
    return status


def test_reads_deployments_and_pods_from_the_api_server() -> None:
    app, selectors = fake_api_server()
    with running(app) as base:
        status = refreshed(base)
    assert status.get("echo").status == "ready"
    assert status.get("echo").created_at == "2024-05-01T10:00:00Z"  # the Deployment's, as the API server writes it
    crash = status.get("t4-embedder")
    assert crash.status == "failed" and "CrashLoopBackOff" in (crash.reason or "")
    assert status.get("unknown").status == "deploying"
    assert status.catalog_created_at() == "2024-04-30T09:00:00Z"
    assert selectors == [MODEL_SELECTOR, MODEL_SELECTOR]


def test_a_failing_api_server_degrades_to_deploying() -> None:
    app, _ = fake_api_server(fail=True)
    with running(app) as base:
        status = refreshed(base)
    degraded = status.get("echo")
    assert degraded.status == "deploying" and "status unavailable" in (degraded.reason or "")


def test_an_unreachable_api_server_degrades_to_deploying() -> None:
    status = refreshed("http://127.0.0.1:9")  # discard port: nothing listens
    assert status.get("echo").status == "deploying"
    assert "status unavailable" in (status.get("echo").reason or "")
