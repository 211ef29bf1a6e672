"""Helpers for the planner tests: build catalogues from raw config and look into plans."""

from __future__ import annotations

import copy
from typing import Any, Optional

import pytest

from catalog_fixtures import ROOT, STACKS, raw_catalog, template, v4_model, v5_model
from sgp_infra.catalog import CatalogInvalid, build_catalog, load_file
from sgp_infra.plan import Plan, plan_catalog

__all__ = ["ROOT", "STACKS", "raw_catalog", "template", "v4_model", "v5_model", "plan_raw", "plan_errors",
           "find", "pod_spec", "container", "stack_plans"]


def plan_raw(raw: dict[str, Any]) -> Plan:
    return plan_catalog(build_catalog(copy.deepcopy(raw)))


def plan_errors(raw: dict[str, Any]) -> dict[str, str]:
    """Planning errors by config path (the catalogue itself must be valid)."""
    catalog = build_catalog(copy.deepcopy(raw))
    with pytest.raises(CatalogInvalid) as caught:
        plan_catalog(catalog)
    return {e.path: e.message for e in caught.value.errors}


def find(plan: Plan, kind: str, name: str) -> Optional[dict[str, Any]]:
    matches = [m for m in plan.manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) <= 1
    return matches[0] if matches else None


def pod_spec(plan: Plan, name: str) -> dict[str, Any]:
    deployment = find(plan, "Deployment", name)
    assert deployment is not None
    return deployment["spec"]["template"]["spec"]


def container(plan: Plan, name: str) -> dict[str, Any]:
    return pod_spec(plan, name)["containers"][0]


def stack_plans() -> dict[str, Plan]:
    return {path.name: plan_catalog(load_file(path)) for path in STACKS}
