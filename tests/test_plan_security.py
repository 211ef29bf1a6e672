"""Least privilege across every pod the planner makes: the API, the models (with the ASYNC
forwarder sidecar) and the in-cluster NATS.

Each module's own tests check its pod in detail; these check the rules that must hold for all
of them at once, so a pod added later cannot silently miss one.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from plan_fixtures import raw_catalog, v5_model
from sgp_infra.catalog import build_catalog
from sgp_infra.plan import plan_catalog
from sgp_infra.plan.api import API_NAME, API_PORT, plan_api


def stack_raw() -> dict[str, Any]:
    """A catalogue with SYNC, GPU and ASYNC models, so every kind of pod is planned."""
    raw = raw_catalog()
    raw["models"]["jobs"] = v5_model(endpoint_type="async", per_worker=2, max_workers=3)
    return raw


MANIFESTS = (lambda c: plan_catalog(c).manifests + plan_api(c))(build_catalog(stack_raw()))


def pods() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(``Kind/name``, pod template metadata, pod spec) of every workload planned."""
    for m in MANIFESTS:
        template = (m.get("spec") or {}).get("template")
        if m["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job") and template:
            yield f"{m['kind']}/{m['metadata']['name']}", template["metadata"], template["spec"]


POD_IDS = [name for name, _, _ in pods()]


def test_the_stack_plans_every_kind_of_pod() -> None:
    kinds = {name.split("/")[0] for name in POD_IDS}
    assert kinds == {"Deployment", "StatefulSet"} and f"Deployment/{API_NAME}" in POD_IDS
    assert any(len(spec["containers"]) == 2 for _, _, spec in pods())  # the ASYNC forwarder sidecar


@pytest.mark.parametrize("name", POD_IDS)
def test_every_pod_is_selected_by_a_network_policy(name: str) -> None:
    meta, _ = next((meta, spec) for n, meta, spec in pods() if n == name)
    policies = [m for m in MANIFESTS if m["kind"] == "NetworkPolicy"]
    selecting = [p for p in policies
                 if p["spec"]["podSelector"]["matchLabels"].items() <= meta["labels"].items()
                 and "Ingress" in p["spec"]["policyTypes"]]
    assert selecting, f"{name} takes traffic from anywhere on any port: no NetworkPolicy selects it"


def test_the_api_pods_take_traffic_on_the_api_port_only() -> None:
    policy = next(m for m in MANIFESTS if m["kind"] == "NetworkPolicy" and m["metadata"]["name"] == API_NAME)
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": API_PORT}]}]


@pytest.mark.parametrize("name", POD_IDS)
def test_every_container_drops_privileges(name: str) -> None:
    _, spec = next((meta, spec) for n, meta, spec in pods() if n == name)
    pod_seccomp = (spec.get("securityContext") or {}).get("seccompProfile")
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert (sc.get("seccompProfile") or pod_seccomp) == {"type": "RuntimeDefault"}, c["name"]


@pytest.mark.parametrize("name", POD_IDS)
def test_only_the_api_pod_gets_a_service_account_token(name: str) -> None:
    _, spec = next((meta, spec) for n, meta, spec in pods() if n == name)
    # The API lists Deployments and pods and watches EndpointSlices; nothing else calls the Kubernetes API.
    assert spec["automountServiceAccountToken"] is (name == f"Deployment/{API_NAME}")
    assert spec["enableServiceLinks"] is False
