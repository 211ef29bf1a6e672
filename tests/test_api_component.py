"""CatalogApi under Pulumi mocks, and the API manifests under strict Kubernetes schemas."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kubernetes_validate
import pulumi
import pytest
import yaml

from sgp_infra.catalog import build_catalog, load_file
from sgp_infra.components.catalog_api import CatalogApi
from sgp_infra.plan.api import (API_KEYS_KEY, CATALOG_CONFIGMAP, CATALOG_KEY, CHECKSUM_ANNOTATION, api_keys_secret,
                                catalog_document, plan_api)

from api_helpers import ROOT
from mock_helpers import Recorder, is_secret

CATALOG = load_file(ROOT / "stacks" / "Pulumi.dev.yaml")


@pulumi.runtime.test
def test_component_registers_the_planned_objects_and_a_secret(recorder: Recorder) -> Any:
    keys = {"k-123": ["dev-account"]}
    api = CatalogApi("api", {"catalog": CATALOG, "api_keys": keys})

    def check(outputs: list[Any]) -> None:
        url, checksum = outputs[:2]
        assert url == "http://sgp-infra-api.sgp-dev.svc.cluster.local"
        names = set(recorder.registered)
        assert {"api-serviceaccount", "api-role", "api-rolebinding", "api-configmap", "api-deployment",
                "api-service", "api-poddisruptionbudget", "api-secret"} <= names
        typ, dep = recorder.registered["api-deployment"]
        assert typ == "kubernetes:apps/v1:Deployment"
        planned = next(m for m in plan_api(CATALOG) if m["kind"] == "Deployment")
        assert dep["spec"]["replicas"] == 2.0  # numbers arrive as floats
        assert dep["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION] == checksum
        assert planned["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION] == checksum
        _, secret = recorder.registered["api-secret"]
        # The value reaches the engine wrapped as a secret (Pulumi's secret signature).
        wrapped = secret["stringData"]
        assert is_secret(wrapped)
        assert json.loads(wrapped["value"][API_KEYS_KEY]) == keys
        _, cm = recorder.registered["api-configmap"]
        assert json.loads(cm["data"][CATALOG_KEY]) == CATALOG.stack_document()
        assert "k-123" not in json.dumps([url, checksum])

    children = [c.urn for c in api.children.values()] + [api.secret.urn]  # type: ignore[union-attr]
    return pulumi.Output.all(api.url, api.catalog_checksum, *children).apply(check)


@pulumi.runtime.test
def test_secret_value_is_a_secret_output(recorder: Recorder) -> Any:
    api = CatalogApi("sec", {"catalog": CATALOG, "api_keys": {"k": ["dev-account"]}})
    assert api.secret is not None
    string_data = api.secret.string_data  # type: ignore[attr-defined]
    return pulumi.Output.from_input(asyncio.ensure_future(string_data.is_secret())).apply(assert_secret)


def assert_secret(secret: bool) -> None:
    assert secret is True


@pytest.mark.parametrize("keys", [["only-a-key"], {}, {"k": []}, {"k": [""]}, {"": ["dev-account"]}, "k"])
def test_malformed_keys_stop_the_program_naming_the_config_key(recorder: Recorder, keys: Any) -> None:
    # Rather than a Secret the API pods cannot read: they would crash-loop until the rollout timed out.
    @pulumi.runtime.test
    def program() -> Any:
        api = CatalogApi("bad", {"catalog": CATALOG, "api_keys": keys})
        return api.secret.string_data  # type: ignore[union-attr]

    with pytest.raises(pulumi.RunError) as caught:
        program()
    message = str(caught.value)
    assert message.startswith("sgp-infra:apiKeys") and "pulumi config set --secret sgp-infra:apiKeys" in message
    assert "only-a-key" not in message


@pulumi.runtime.test
def test_without_keys_no_secret_is_created(recorder: Recorder) -> Any:
    api = CatalogApi("nokeys", {"catalog": CATALOG})
    assert api.secret is None
    return api.url.apply(lambda _: None)


def test_catalogue_change_rolls_the_pods() -> None:
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    raw = {k.split(":", 1)[1]: v for k, v in doc["config"].items() if k.startswith("sgp-infra:")}
    before = next(m for m in plan_api(build_catalog(raw)) if m["kind"] == "Deployment")
    raw["models"]["echo"]["description"] = "changed"
    after = next(m for m in plan_api(build_catalog(raw)) if m["kind"] == "Deployment")
    key = ("spec", "template", "metadata", "annotations")
    a = before[key[0]][key[1]][key[2]][key[3]][CHECKSUM_ANNOTATION]
    b = after[key[0]][key[1]][key[2]][key[3]][CHECKSUM_ANNOTATION]
    assert a != b


def test_published_catalogue_rebuilds_the_same_catalogue() -> None:
    from sgp_infra.catalog import raw_from_stack_doc
    rebuilt = build_catalog(raw_from_stack_doc(json.loads(catalog_document(CATALOG))))
    assert {m.id for m in rebuilt.models.values()} == {m.id for m in CATALOG.models.values()}


@pytest.mark.parametrize("version", ["1.27", "1.31"])
def test_api_manifests_pass_strict_schemas(version: str) -> None:
    for manifest in [*plan_api(CATALOG), {**api_keys_secret("sgp-dev"), "stringData": {API_KEYS_KEY: "{}"}}]:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_restricted_pod_security() -> None:
    dep = next(m for m in plan_api(CATALOG) if m["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and sc["runAsNonRoot"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    role = next(m for m in plan_api(CATALOG) if m["kind"] == "Role")
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs <= {"get", "list", "watch"}


def test_the_role_grants_exactly_the_reads_the_api_makes() -> None:
    # kube_status lists Deployments and pods and gets the catalogue ConfigMap; the routing
    # lists and watches EndpointSlices.  Nothing else: no ReplicaSets, no get on whole kinds.
    role = next(m for m in plan_api(CATALOG) if m["kind"] == "Role")
    grants = {(group, resource, tuple(rule.get("resourceNames", ()))): sorted(rule["verbs"])
              for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}
    assert grants == {
        ("apps", "deployments", ()): ["list"],
        ("", "pods", ()): ["list"],
        ("discovery.k8s.io", "endpointslices", ()): ["list", "watch"],
        ("", "configmaps", (CATALOG_CONFIGMAP,)): ["get"],
    }
