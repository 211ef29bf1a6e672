"""The file loader and the Pulumi-config loader give the same catalogue, and an
invalid catalogue stops the Pulumi program before any resource exists."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from catalog_fixtures import ROOT, STACKS, raw_catalog
from sgp_infra.catalog import CatalogInvalid, load_file, load_pulumi
from mock_helpers import set_mocks


def pulumi_config_of(config: dict[str, Any]) -> dict[str, str]:
    """Stack-file config as the Pulumi engine hands it to a program: strings,
    with structured values JSON-encoded."""
    out = {}
    for key, value in config.items():
        if isinstance(value, (dict, list)):
            out[key] = json.dumps(value)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.resources.append(args)
        return f"{args.name}-id", args.inputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        return {}, []


@pytest.fixture
def mocks() -> RecordingMocks:
    mocks = RecordingMocks()
    set_mocks(mocks, project="sgp-infra", stack="test", preview=False)
    yield mocks
    pulumi.runtime.set_all_config({}, [])


@pytest.mark.parametrize("stack", STACKS, ids=lambda p: p.name)
def test_both_loaders_give_the_same_catalogue(stack: Path, mocks: RecordingMocks) -> None:
    doc = yaml.safe_load(stack.read_text())
    pulumi.runtime.set_all_config(pulumi_config_of(doc["config"]))
    from_pulumi = load_pulumi()
    from_file = load_file(stack)
    assert from_pulumi == from_file
    assert from_pulumi.summary() == from_file.summary()
    assert from_pulumi.stack_document() == from_file.stack_document()
    assert {m.id for m in from_pulumi.models.values()} == {m.id for m in from_file.models.values()}


def test_scalar_settings_arrive_as_strings_from_pulumi(mocks: RecordingMocks) -> None:
    raw = raw_catalog() | {"createPriorityClasses": False, "api": {"replicas": 3}}
    pulumi.runtime.set_all_config(pulumi_config_of({f"sgp-infra:{k}": v for k, v in raw.items()}))
    catalog = load_pulumi()
    assert catalog.settings.create_priority_classes is False
    assert catalog.settings.api.replicas == 3


def test_secret_keys_never_enter_the_catalogue(mocks: RecordingMocks, tmp_path: Path) -> None:
    config = {f"sgp-infra:{k}": v for k, v in raw_catalog().items()}
    config["sgp-infra:apiKeys"] = {"secure": "v1:abc"}
    path = tmp_path / "Pulumi.s.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    assert "apiKeys" not in load_file(path).source
    pulumi.runtime.set_all_config(pulumi_config_of(config | {"sgp-infra:apiKeys": {"k": ["acct"]}}),
                                  ["sgp-infra:apiKeys"])
    assert "apiKeys" not in load_pulumi().source


def test_a_misspelt_namespace_is_a_problem_under_pulumi_as_in_validate(mocks: RecordingMocks) -> None:
    from sgp_infra.catalog import CatalogInvalid

    config = {f"sgp-infra:{k}": v for k, v in raw_catalog().items()}
    models = config.pop("sgp-infra:models")
    config["sgp-infra:modelGroups"] = {}
    pulumi.runtime.set_all_config(pulumi_config_of(config | {"sgp_infra:models": models, "kubernetes:context": "c"}))
    with pytest.raises(CatalogInvalid) as info:
        load_pulumi()
    assert [str(e) for e in info.value.errors] == [
        "sgp_infra:models: namespace 'sgp_infra' is not 'sgp-infra'; did you mean sgp-infra:models?"]


def problems(error: pytest.ExceptionInfo[CatalogInvalid]) -> dict[str, str]:
    return {e.path: e.message for e in error.value.errors}


def test_api_keys_in_clear_are_refused_with_the_command_that_sets_them(mocks: RecordingMocks,
                                                                       tmp_path: Path) -> None:
    config = {f"sgp-infra:{k}": v for k, v in raw_catalog().items()} | {"sgp-infra:apiKeys": {"k": ["acct"]}}
    path = tmp_path / "Pulumi.s.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    with pytest.raises(CatalogInvalid) as from_file:
        load_file(path)
    pulumi.runtime.set_all_config(pulumi_config_of(config))  # set without --secret
    with pytest.raises(CatalogInvalid) as from_pulumi:
        load_pulumi()
    for found in (problems(from_file), problems(from_pulumi)):
        assert list(found) == ["sgp-infra:apiKeys"]
        assert "plain text" in found["sgp-infra:apiKeys"]
        assert "pulumi config set --secret sgp-infra:apiKeys" in found["sgp-infra:apiKeys"]


def test_a_secret_in_published_config_is_refused_where_it_is(mocks: RecordingMocks, tmp_path: Path) -> None:
    # `pulumi config set --secret --path sgp-infra:models.m5....env.HF_TOKEN` would publish the token
    # in the catalogue ConfigMap and the Deployment's env: refused, at its path.
    raw = raw_catalog()
    raw["models"]["m5"]["vendor_configuration"]["model_image"]["env"] = {"HF_TOKEN": {"secure": "v1:abc"}}
    config = {f"sgp-infra:{k}": v for k, v in raw.items()}
    path = tmp_path / "Pulumi.s.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    with pytest.raises(CatalogInvalid) as from_file:
        load_file(path)
    assert list(problems(from_file)) == ["sgp-infra:models.m5.vendor_configuration.model_image.env.HF_TOKEN"]
    # The message says what to do instead: the token in sgp-infra:modelSecrets, its name in `secrets:`.
    message = problems(from_file)["sgp-infra:models.m5.vendor_configuration.model_image.env.HF_TOKEN"]
    assert "only apiKeys, modelSecrets and natsCredentials may be secrets" in message
    assert "pulumi config set --secret sgp-infra:modelSecrets" in message and "secrets: [<name>]" in message
    # The engine hands the program the decrypted value and marks the whole key secret.
    raw["models"]["m5"]["vendor_configuration"]["model_image"]["env"] = {"HF_TOKEN": "hf_live_token"}
    pulumi.runtime.set_all_config(pulumi_config_of({f"sgp-infra:{k}": v for k, v in raw.items()}),
                                  ["sgp-infra:models"])
    with pytest.raises(CatalogInvalid) as from_pulumi:
        load_pulumi()
    assert list(problems(from_pulumi)) == ["sgp-infra:models"]
    assert "hf_live_token" not in str(from_pulumi.value)


def test_secret_keys_are_read_from_the_environment_the_engine_sets(mocks: RecordingMocks,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A program the engine runs learns its secret keys from PULUMI_CONFIG_SECRET_KEYS, not set_all_config.
    config = {f"sgp-infra:{k}": v for k, v in raw_catalog().items()}
    pulumi.runtime.set_all_config(pulumi_config_of(config), [])
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(["sgp-infra:namespace"]))
    with pytest.raises(CatalogInvalid) as caught:
        load_pulumi()
    assert list(problems(caught)) == ["sgp-infra:namespace"]


@pulumi.runtime.test
def test_invalid_catalogue_registers_no_resource(mocks: RecordingMocks) -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["model_creation_parameters"] = {}
    raw["models"]["m5"]["vendor_configuration"]["model_infra"]["gpus"] = 0
    pulumi.runtime.set_all_config(pulumi_config_of({f"sgp-infra:{k}": v for k, v in raw.items()}))
    with pytest.raises(pulumi.RunError) as info:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
    text = str(info.value)
    assert "sgp-infra:models.m4.model_creation_parameters.weights" in text
    assert "sgp-infra:models.m5.vendor_configuration.model_infra.gpus" in text
    assert mocks.resources == []
