"""The Pulumi program and components under mocks register exactly the planned manifests.

``__main__.py`` runs for each example stack with that stack's config, passed
as the Pulumi engine passes it (structured values as JSON text).  Every
Kubernetes resource it registers must be one of the planner's manifests, with
the same kind, name and fields, and every planned manifest must be
registered; children hang under their components.
"""

from __future__ import annotations

import json
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pulumi
import pytest
import yaml
from pulumi.runtime.mocks import MockMonitor

from plan_fixtures import ROOT, STACKS, raw_catalog
from sgp_infra.catalog import build_catalog, load_file
from sgp_infra.components import ModelEndpoint
from sgp_infra.plan import plan_catalog
from sgp_infra.plan.api import plan_api
from mock_helpers import set_mocks


@dataclass
class Registration:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str
    provider: str
    create_timeout: str
    dependencies: tuple[str, ...] = ()


class Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registered: list[Registration] = []
        self._pending: dict[tuple[str, str], tuple[str, str, tuple[str, ...]]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[Optional[str], dict[str, Any]]:
        parent, timeout, deps = self._pending.pop((args.typ, args.name), ("", "", ()))
        self.registered.append(Registration(args.typ, args.name, dict(args.inputs), parent, args.provider, timeout,
                                            deps))
        return f"{args.name}-id", args.inputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


class RecordingMonitor(MockMonitor):
    """Also notes each registration's parent and custom timeouts, which mocks do not see."""

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        self.mocks._pending[(request.type, request.name)] = (request.parent, request.customTimeouts.create,
                                                             tuple(request.dependencies))
        return super().RegisterResource(request)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    mocks = Recorder()
    set_mocks(mocks, project="sgp-infra", stack="test", preview=False,
                             monitor=RecordingMonitor(mocks))
    yield mocks
    pulumi.runtime.set_all_config({})


def engine_config(config: dict[str, Any]) -> dict[str, str]:
    """Stack config as the engine hands it to a program: strings, objects as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def pulumi_type(manifest: dict[str, Any]) -> str:
    api = "core/v1" if manifest["apiVersion"] == "v1" else manifest["apiVersion"]
    return f"kubernetes:{api}:{manifest['kind']}"


def normalize(value: Any) -> Any:
    """Mocks deliver numbers as floats; the planner writes ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def run_program(stack: Path) -> None:
    config = yaml.safe_load(stack.read_text())["config"]
    pulumi.runtime.set_all_config(engine_config(config))

    @pulumi.runtime.test
    def program() -> pulumi.Output[int]:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        return pulumi.Output.from_input(0)

    program()


def by_urn_suffix(recorder: Recorder) -> dict[str, Registration]:
    return {f"{r.type}::{r.name}": r for r in recorder.registered}


@pytest.mark.parametrize("stack", STACKS, ids=[p.name for p in STACKS])
def test_program_registers_exactly_the_planned_manifests(stack: Path, recorder: Recorder) -> None:
    run_program(stack)
    catalog = load_file(stack)
    plan = plan_catalog(catalog)
    k8s = [r for r in recorder.registered if r.type.startswith("kubernetes:")]
    registered = {(r.type, r.inputs["metadata"]["name"]): r for r in k8s}
    assert len(registered) == len(k8s)
    # The program also deploys the catalogue API (CatalogApi: plan_api's objects).
    # The API container is told its stack (the mocks' "test"), so its 405 answers name the stack's file.
    expected = {(pulumi_type(m), m["metadata"]["name"]): m for m in [*plan.manifests, *plan_api(catalog, "test")]}
    api_env = expected[("kubernetes:apps/v1:Deployment", "sgp-infra-api")]["spec"]["template"]["spec"][
        "containers"][0]["env"]
    assert {"name": "SGP_INFRA_STACK", "value": "test"} in api_env
    assert set(registered) == set(expected)
    for key, manifest in expected.items():
        assert normalize(registered[key].inputs) == manifest, key


@pytest.mark.parametrize("stack", STACKS, ids=[p.name for p in STACKS])
def test_resource_tree_names_parents_and_timeouts(stack: Path, recorder: Recorder) -> None:
    run_program(stack)
    plan = plan_catalog(load_file(stack))
    regs = by_urn_suffix(recorder)
    catalog_urn_tail = "sgp-infra:index:ModelCatalog::sgp-infra"
    # The root stack's URN depends on which test first set the mocks up; its type does not.
    [root] = [r for r in recorder.registered if r.type == "sgp-infra:index:ModelCatalog"]
    assert "::pulumi:pulumi:Stack::" in root.parent
    for manifest in plan.shared:
        reg = regs[f"{pulumi_type(manifest)}::sgp-infra-{manifest['kind'].lower()}-{manifest['metadata']['name']}"]
        assert reg.parent.endswith(catalog_urn_tail)
    for model_plan in plan.models.values():
        endpoint_name = f"sgp-infra-{model_plan.object_name}"
        endpoint = regs[f"sgp-infra:index:ModelEndpoint::{endpoint_name}"]
        assert endpoint.parent.endswith(catalog_urn_tail)
        for manifest in model_plan.manifests:
            reg = regs[f"{pulumi_type(manifest)}::{endpoint_name}-{manifest['kind'].lower()}"]
            assert reg.parent.endswith(f"sgp-infra:index:ModelEndpoint::{endpoint_name}")
            if manifest["kind"] == "Deployment":
                seconds = int(reg.create_timeout.rstrip("s"))
                delay = manifest["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["initialDelaySeconds"]
                assert seconds > delay and seconds >= model_plan.rollout_timeout_seconds


@pytest.mark.parametrize("stack", STACKS, ids=[p.name for p in STACKS])
def test_namespaced_objects_wait_for_the_namespace(stack: Path, recorder: Recorder) -> None:
    run_program(stack)
    [namespace] = [r for r in recorder.registered if r.type == "kubernetes:core/v1:Namespace"]
    ns_urn_tail = f"kubernetes:core/v1:Namespace::{namespace.name}"
    for reg in recorder.registered:
        if reg.type.startswith("kubernetes:") and "namespace" in reg.inputs["metadata"]:
            assert any(dep.endswith(ns_urn_tail) for dep in reg.dependencies), reg.name


def test_the_api_keys_reach_only_their_secret(recorder: Recorder) -> None:
    # The whole program with sgp-infra:apiKeys set as Pulumi sets a secret: the keys' value is in
    # the keys Secret and in no other object (not the catalogue ConfigMap, not the Deployment's env).
    prod = next(p for p in STACKS if p.name == "Pulumi.prod.yaml")
    config = yaml.safe_load(prod.read_text())["config"]
    key = "prod-key-never-published-0123456789"
    config["sgp-infra:apiKeys"] = {key: ["acme"]}
    pulumi.runtime.set_all_config(engine_config(config), ["sgp-infra:apiKeys"])

    @pulumi.runtime.test
    def program() -> pulumi.Output[int]:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        return pulumi.Output.from_input(0)

    try:
        program()
    finally:
        pulumi.runtime.set_all_config({}, [])
    holding = [r.name for r in recorder.registered if key in json.dumps(r.inputs, default=str)]
    assert holding == ["sgp-infra-api-secret"]


def test_render_to_directory_uses_an_explicit_provider(recorder: Recorder) -> None:
    dev = next(p for p in STACKS if p.name == "Pulumi.dev.yaml")
    run_program(dev)
    [provider] = [r for r in recorder.registered if r.type == "pulumi:providers:kubernetes"]
    assert provider.inputs["renderYamlToDirectory"] == "rendered/dev"
    for reg in recorder.registered:
        if reg.type.startswith("kubernetes:"):
            assert f"pulumi:providers:kubernetes::{provider.name}::" in reg.provider


def test_without_render_setting_no_explicit_provider(recorder: Recorder) -> None:
    prod = next(p for p in STACKS if p.name == "Pulumi.prod.yaml")
    run_program(prod)
    assert not [r for r in recorder.registered if r.type == "pulumi:providers:kubernetes" and r.name == "render-yaml"]


def test_planning_errors_stop_the_program_before_any_resource(recorder: Recorder, tmp_path: Path) -> None:
    raw = raw_catalog()
    raw["gpuProfile"] = "gke"  # m5 asks for an A10, which GKE does not offer
    pulumi.runtime.set_all_config(engine_config({f"sgp-infra:{k}": v for k, v in raw.items()}))
    with pytest.raises(pulumi.RunError) as caught:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
    assert "sgp-infra:models.m5.vendor_configuration.model_infra.gpu_type" in str(caught.value)
    assert recorder.registered == []


@pulumi.runtime.test
def _endpoint_outputs() -> pulumi.Output[Any]:
    catalog = build_catalog(raw_catalog())
    endpoint = ModelEndpoint("solo", {"model": catalog.models["m5"], "settings": catalog.settings})

    def check(values: list[Any]) -> None:
        url, deployment_name, placement = values
        assert url == "http://m5.models.svc.cluster.local"
        assert deployment_name == "m5"
        assert placement["nodeSelector"] == {"k8s.amazonaws.com/accelerator": "nvidia-ampere-a10"}
        assert placement["resource"] == "nvidia.com/gpu" and placement["count"] == 1

    return pulumi.Output.all(endpoint.url, endpoint.deployment_name, endpoint.placement).apply(check)


def test_model_endpoint_alone_plans_itself_and_exposes_outputs(recorder: Recorder) -> None:
    _endpoint_outputs()
    names = sorted(r.name for r in recorder.registered)
    assert names == ["solo", "solo-deployment", "solo-poddisruptionbudget", "solo-scaledobject", "solo-service"]
