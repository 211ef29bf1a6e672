"""Every planned manifest is schema-valid Kubernetes.

Core kinds validate with ``kubernetes-validate`` in strict mode (unknown
fields are errors) against the oldest and the newest Kubernetes versions the
installed package ships schemas for; ScaledObjects validate against KEDA's own
CRD schema, vendored in ``tests/schemas/keda/`` (source and version in its
``SOURCE.md``), made strict the same way.  A property test extends this from the
example stacks to any valid generated catalogue.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mock_helpers import strict_schema
from plan_fixtures import STACKS, stack_plans
from sgp_infra.catalog import CatalogInvalid, build_catalog
from sgp_infra.catalog.entities import GPU_TYPES, MIG_GPU_TYPES
from sgp_infra.plan import plan_catalog

KEDA_SCHEMAS = Path(__file__).parent / "schemas" / "keda"


def _versions() -> tuple[str, str]:
    from kubernetes_validate.utils import all_versions

    ordered = sorted(set(all_versions()), key=lambda v: tuple(int(p) for p in v.split(".")))
    return ordered[0], ordered[-1]


OLDEST, NEWEST = _versions()


@cache
def keda_validator(version: str = "v1alpha1") -> jsonschema.protocols.Validator:
    path = KEDA_SCHEMAS / "keda.sh_scaledobjects.yaml"
    crd = yaml.safe_load(path.read_text())
    [entry] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = strict_schema(entry["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def validate(manifest: dict[str, Any], versions: tuple[str, ...] = (OLDEST, NEWEST)) -> None:
    if manifest["apiVersion"].startswith("keda.sh/"):
        errors = sorted(keda_validator(manifest["apiVersion"].split("/")[1]).iter_errors(manifest), key=str)
        assert not errors, f"{manifest['kind']}/{manifest['metadata']['name']}: {[e.message for e in errors]}"
        return
    for version in versions:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']} invalid for Kubernetes {version}: {exc}")


def _stack_manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{stack}:{m['kind']}/{m['metadata']['name']}", m)
            for stack, plan in stack_plans().items() for m in plan.manifests]


STACK_MANIFESTS = _stack_manifests()


def test_oldest_and_newest_versions_differ() -> None:
    assert OLDEST != NEWEST


def test_example_stacks_plan_scaled_objects() -> None:
    assert any(m["kind"] == "ScaledObject" for _, m in STACK_MANIFESTS)
    assert len(STACKS) >= 2


@pytest.mark.parametrize("manifest", [m for _, m in STACK_MANIFESTS], ids=[i for i, _ in STACK_MANIFESTS])
def test_example_stack_manifest_is_schema_valid(manifest: dict[str, Any]) -> None:
    validate(manifest)


@pytest.mark.parametrize("autoscaler", ["keda", "hpa"])
def test_hpa_and_keda_variants_are_schema_valid(autoscaler: str) -> None:
    raw = {"accountId": "a", "autoscaler": autoscaler, "gpuProfile": "nfd",
           "models": {"m": _v5({"gpus": 1, "gpu_type": "nvidia-hopper-h100-1g20gb", "min_workers": 1,
                                "max_workers": 3, "endpoint_type": "sync", "high_priority": True})}}
    for manifest in plan_catalog(build_catalog(raw)).manifests:
        validate(manifest)


def test_strict_keda_schema_rejects_a_misspelt_field() -> None:
    bad = copy.deepcopy(next(m for _, m in STACK_MANIFESTS if m["kind"] == "ScaledObject"))
    bad["spec"]["minReplicas"] = 1
    assert list(keda_validator().iter_errors(bad))


# --- property: any valid generated catalogue renders to schema-valid manifests ----------------

NAMES = st.from_regex(r"[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,6}){0,2}", fullmatch=True)
LABEL_KEYS = st.sampled_from(["team", "acme.io/cost-center", "tier", "x_y.z"])
LABEL_VALUES = st.from_regex(r"([a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?)?", fullmatch=True)


def _v5(infra: dict[str, Any]) -> dict[str, Any]:
    return {"model_type": "generic", "model_vendor": "launch",
            "vendor_configuration": {
                "model_image": {"registry": "ghcr.io/acme", "repository": "srv", "tag": "1", "command": ["serve"],
                                "env_vars": {"A": "1"}},
                "model_infra": infra}}


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    gpu_type = draw(st.none() | st.sampled_from(GPU_TYPES))
    gpus = 0 if gpu_type is None else (1 if gpu_type in MIG_GPU_TYPES else draw(st.integers(1, 8)))
    min_workers = draw(st.integers(0, 3))
    out: dict[str, Any] = {
        "cpus": draw(st.sampled_from([1, 4, "500m", "2"])),
        "memory": draw(st.sampled_from(["512Mi", "8Gi", "1G"])),
        "storage": draw(st.sampled_from(["1Gi", "200Gi"])),
        "gpus": gpus,
        "min_workers": min_workers,
        "max_workers": min_workers + draw(st.integers(0, 3)),
        "per_worker": draw(st.integers(1, 64)),
        "high_priority": draw(st.booleans()),
    }
    if gpu_type:
        out["gpu_type"] = gpu_type
    return out


@st.composite
def catalogues(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    models: dict[str, Any] = {}
    templates: dict[str, Any] = {}
    for name in names:
        res = draw(resources())
        streaming = draw(st.booleans())
        if draw(st.booleans()):
            infra = dict(res, endpoint_type="streaming" if streaming else "sync")
            if draw(st.booleans()):
                infra["labels"] = draw(st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=2))
            models[name] = _v5(infra)
        else:
            templates[f"t-{name}"] = {
                "endpoint_type": "STREAMING" if streaming else "SYNC",
                "model_type": "COMPLETION",
                "vendor_configuration": {
                    "bundle_config": {
                        "registry": "ghcr.io/acme", "image": "srv", "tag": "2.0",
                        "command": ["serve", "${w}"], "streaming_command": ["serve", "--stream", "${w}"],
                        "env": {"W": "${w}"},
                        "readiness_initial_delay_seconds": draw(st.integers(0, 4000)),
                    },
                    "endpoint_config": res,
                },
                "model_creation_parameters_schema": {
                    "parameters": [{"name": "w", "type": "str", "description": "d", "required": True}]},
            }
            models[name] = {"model_type": "COMPLETION", "model_template_id": f"t-{name}",
                            "model_creation_parameters": {"w": draw(st.text("abc/:", min_size=1, max_size=8))}}
    return {
        "accountId": "acct",
        "namespace": draw(NAMES),
        "gpuProfile": draw(st.sampled_from(["eks", "gke", "karpenter", "nfd"])),
        "autoscaler": draw(st.sampled_from(["keda", "hpa"])),
        "createPriorityClasses": draw(st.booleans()),
        "templates": templates,
        "models": models,
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogues())
def test_any_valid_catalogue_renders_schema_valid_manifests(raw: dict[str, Any]) -> None:
    catalog = build_catalog(raw)  # the generator only makes valid catalogues
    try:
        plan = plan_catalog(catalog)
    except CatalogInvalid as invalid:
        # Only the two rules a cluster setting can break: placement and HPA scale-to-zero.
        v4_paths = {f"sgp-infra:models.{name}" for name in raw["models"]}
        for error in invalid.errors:
            assert error.path.endswith((".gpu_type", ".min_workers")) or error.path in v4_paths, error
        event("planning refused")
        return
    event("planned")
    names = [(m["kind"], m["metadata"]["name"]) for m in plan.manifests]
    assert len(names) == len(set(names))
    for manifest in plan.manifests:
        validate(manifest)


@pytest.mark.parametrize("replicas", [1, 3])
def test_async_stack_is_schema_valid(replicas: int) -> None:
    """An ASYNC model: its nats-jetstream ScaledObject (KEDA CRD), the forwarder sidecar and the NATS StatefulSet."""
    raw = {"accountId": "a", "async": {"replicas": replicas, "storageClassName": "gp3"},
           "models": {"q": _v5({"min_workers": 0, "max_workers": 3, "endpoint_type": "async"})}}
    manifests = plan_catalog(build_catalog(raw)).manifests
    kinds = {m["kind"] for m in manifests}
    assert {"StatefulSet", "ScaledObject", "ConfigMap"} <= kinds
    assert ("PodDisruptionBudget" in {m["kind"] for m in manifests if m["metadata"]["name"] == "sgp-infra-nats"}) \
        == (replicas > 1)
    scaled = next(m for m in manifests if m["kind"] == "ScaledObject")
    assert scaled["spec"]["triggers"][0]["type"] == "nats-jetstream"
    for manifest in manifests:
        validate(manifest)
