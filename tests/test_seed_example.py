"""Seed 001's example body: invalid as published, valid once filled in."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from catalog_fixtures import ROOT
from sgp_infra.catalog import CatalogInvalid, build_catalog, load_file

SEED = json.loads((Path(__file__).parent / "data" / "seed001_example.json").read_text())
BASE = "sgp-infra:templates.seed-example"


def test_unmodified_seed_example_gives_exactly_these_errors() -> None:
    with pytest.raises(CatalogInvalid) as info:
        build_catalog({"accountId": "acme-ml", "templates": {"seed-example": copy.deepcopy(SEED)}})
    errors = {e.path: e.message for e in info.value.errors}
    vc = f"{BASE}.vendor_configuration"
    assert set(errors) == {
        f"{BASE}.name",
        f"{vc}.bundle_config.registry", f"{vc}.bundle_config.image", f"{vc}.bundle_config.tag",
        f"{vc}.fine_tuning_job_bundle_config.registry", f"{vc}.fine_tuning_job_bundle_config.image",
        f"{vc}.fine_tuning_job_bundle_config.tag",
        f"{vc}.endpoint_config.gpus",  # gpu_type set with gpus: 0
        f"{vc}.fine_tuning_job_bundle_config.resources.gpus",
        f"{vc}.endpoint_config.endpoint_type",  # ASYNC against the template's SYNC
    }
    assert "gpu_type is 'nvidia-tesla-t4'" in errors[f"{vc}.endpoint_config.gpus"]
    assert "is ASYNC but the template's endpoint_type is SYNC" in errors[f"{vc}.endpoint_config.endpoint_type"]


def test_seed_example_filled_in_is_the_prod_template() -> None:
    catalog = load_file(ROOT / "stacks" / "Pulumi.prod.yaml")
    tpl = catalog.templates["seed-completion"]
    # every field of the published example is present in the prod entry
    dumped = tpl.spec.model_dump(exclude_unset=True)
    assert set(SEED) == set(dumped)
    assert set(SEED["vendor_configuration"]["bundle_config"]) == set(dumped["vendor_configuration"]["bundle_config"])
    assert (set(SEED["vendor_configuration"]["endpoint_config"])
            == set(dumped["vendor_configuration"]["endpoint_config"]))
    assert tpl.id == "0b8f7a2e-5d6c-4e1a-9f3b-7c2d1e0a9b84"
    assert catalog.models["legacy-completion"].template is tpl
