"""examples/platform-team under Pulumi mocks: its provider, namespace, catalogue, extra endpoint and transform.

The mock monitor does not run transforms, so the recorder below applies them
as the engine does: a resource's own transforms, then each ancestor's, so a
transform given to a component reaches every child.
"""

from __future__ import annotations

import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pulumi
import pytest
from pulumi.runtime.mocks import MockMonitor

from sgp_infra.catalog import load_file
from sgp_infra.plan import plan_catalog
from mock_helpers import set_mocks

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "platform-team"
TEAM_LABEL = "acme.example.com/team"


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    provider: str
    custom: bool
    inputs: dict[str, Any]


class Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registered: list[Registration] = []
        self.pending: dict[tuple[str, str], tuple[str, str]] = {}
        self.transforms: dict[str, list[Callable[..., Any]]] = {}
        self.parents: dict[str, str] = {}

    def chain(self, urn: str) -> list[Callable[..., Any]]:
        out: list[Callable[..., Any]] = []
        while urn:
            out += self.transforms.get(urn, [])
            urn = self.parents.get(urn, "")
        return out

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[Optional[str], dict[str, Any]]:
        urn, parent = self.pending.pop((args.typ, args.name))
        self.transforms[urn] = list(args.transforms)
        self.parents[urn] = parent
        props = dict(args.inputs)
        for transform in self.chain(urn):
            result = transform(pulumi.ResourceTransformArgs(args.custom, args.typ, args.name, props,
                                                            pulumi.ResourceOptions()))
            if result is not None:
                props = dict(result.props)
        self.registered.append(Registration(args.typ, args.name, urn, parent, args.provider, args.custom, props))
        return f"{args.name}-id", props

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


class RecordingMonitor(MockMonitor):
    """Notes each registration's URN and parent, which mocks do not see."""

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        urn = self.make_urn(request.parent, request.type, request.name)
        self.mocks.pending[(request.type, request.name)] = (urn, request.parent)
        return super().RegisterResource(request)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    mocks = Recorder()
    set_mocks(mocks, project="ml-platform", stack="test", preview=False,
                             monitor=RecordingMonitor(mocks))
    yield mocks
    pulumi.runtime.set_all_config({})


def run_example(config: dict[str, str]) -> None:
    pulumi.runtime.set_all_config(config)

    @pulumi.runtime.test
    def program() -> pulumi.Output[int]:
        runpy.run_path(str(EXAMPLE / "__main__.py"), run_name="__main__")
        return pulumi.Output.from_input(0)

    program()


def k8s_objects(recorder: Recorder) -> list[Registration]:
    return [r for r in recorder.registered if r.custom and r.type.startswith("kubernetes:")]


def test_own_provider_and_namespace(recorder: Recorder) -> None:
    run_example({"ml-platform:renderDir": "rendered"})
    [provider] = [r for r in recorder.registered if r.type == "pulumi:providers:kubernetes"]
    assert provider.name == "cluster" and provider.inputs["renderYamlToDirectory"] == "rendered"
    objects = k8s_objects(recorder)
    assert objects and all("pulumi:providers:kubernetes::cluster::" in r.provider for r in objects)
    namespaces = {r.inputs["metadata"]["name"] for r in objects if r.type == "kubernetes:core/v1:Namespace"}
    assert namespaces == {"ml-platform", "ml-catalog"}  # the team's own, and the catalogue's


def test_catalogue_and_extra_endpoint(recorder: Recorder) -> None:
    run_example({"ml-platform:namespace": "team-a"})
    plan = plan_catalog(load_file(EXAMPLE / "catalog.yaml"))
    deployments = {(r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r
                   for r in k8s_objects(recorder) if r.type == "kubernetes:apps/v1:Deployment"}
    assert set(deployments) == {("ml-catalog", "llama-3-8b-instruct"), ("ml-catalog", "mistral-7b-instruct"),
                                ("team-a", "team-reranker")}
    assert set(plan.models) == {"llama-3-8b-instruct", "mistral-7b-instruct"}
    components = {(r.type, r.name): r for r in recorder.registered if not r.custom}
    catalog = components[("sgp-infra:index:ModelCatalog", "catalog")]
    reranker = components[("sgp-infra:index:ModelEndpoint", "team-reranker")]
    assert "::pulumi:pulumi:Stack::" in reranker.parent, "outside the catalogue: a child of the stack"
    assert components[("sgp-infra:index:ModelEndpoint", "catalog-llama-3-8b-instruct")].parent == catalog.urn
    team_ns = next(r for r in k8s_objects(recorder) if r.name == "team-namespace")
    assert team_ns.inputs["metadata"]["name"] == "team-a"
    # the extra endpoint's pods are placed by the same planner: a T4 node under the eks profile
    pod = deployments[("team-a", "team-reranker")].inputs["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"k8s.amazonaws.com/accelerator": "nvidia-tesla-t4"}


def test_transform_labels_every_child_of_the_components(recorder: Recorder) -> None:
    run_example({})
    objects = k8s_objects(recorder)
    assert len(objects) > 8
    for reg in objects:
        assert reg.inputs["metadata"]["labels"][TEAM_LABEL] == "ml-platform", reg.name
    # the planner's own labels are kept alongside the team's
    llama = next(r for r in objects if r.type == "kubernetes:apps/v1:Deployment"
                 and r.inputs["metadata"]["name"] == "llama-3-8b-instruct")
    assert llama.inputs["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sgp-infra"


def test_transform_function_leaves_components_and_providers_alone() -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from team_labels import label_team
    finally:
        sys.path.remove(str(EXAMPLE))
    opts = pulumi.ResourceOptions()
    for custom, type_ in ((False, "sgp-infra:index:ModelCatalog"), (True, "pulumi:providers:kubernetes"),
                          (True, "random:index/randomId:RandomId")):
        assert label_team(pulumi.ResourceTransformArgs(custom, type_, "x", {"metadata": {}}, opts)) is None
    result = label_team(pulumi.ResourceTransformArgs(
        True, "kubernetes:core/v1:Service", "s", {"metadata": {"name": "s", "labels": {"a": "b"}}, "spec": {}}, opts))
    assert result is not None
    assert result.props["metadata"] == {"name": "s", "labels": {"a": "b", TEAM_LABEL: "ml-platform"}}
    assert result.props["spec"] == {}


def test_example_files() -> None:
    text = (EXAMPLE / "Pulumi.yaml").read_text()
    assert "name: ml-platform" in text and "runtime:" in text
    assert (EXAMPLE / "README.md").is_file()
