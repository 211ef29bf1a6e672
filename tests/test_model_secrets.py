"""Model secrets: ``sgp-infra:modelSecrets`` (a Pulumi secret) and the ``secrets:`` extension naming its entries.

The catalogue validates the names, the planner gives each Secret's metadata
and the containers' envFrom, the component fills the Secrets from the secret
config, and the values appear in no other object, output or manifest.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from plan_fixtures import STACKS, container, find, plan_raw, pod_spec, raw_catalog
from sgp_infra.catalog import CatalogInvalid, build_catalog, load_file, load_pulumi
from sgp_infra.catalog.secrets import MODEL_SECRET_PREFIX, model_secrets_problems
from sgp_infra.catalog.sources import raw_from_stack_doc
from sgp_infra.cli import main
from sgp_infra.components import ModelCatalog
from sgp_infra.plan import plan_catalog
from sgp_infra.plan.secrets import env_from, model_secret, model_secret_name, model_secret_problems, used_secrets
from test_components import Recorder, engine_config
from test_manifest_schemas import validate
from mock_helpers import is_secret
from program_helpers import OutputsMonitor, run_main

TOKEN = "hf_never_published_0123456789abcdef"


def errors_of(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(CatalogInvalid) as caught:
        build_catalog(copy.deepcopy(raw))
    return {e.path: e.message for e in caught.value.errors}


# -- the catalogue: names, inheritance, validation ------------------------------------------------


def test_a_template_s_secrets_are_its_models_unless_a_model_lists_its_own() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["secrets"] = ["hf"]
    raw["models"]["m4b"] = {**raw["models"]["m4"], "secrets": ["s3-creds"]}
    raw["models"]["m4c"] = {**raw["models"]["m4"], "secrets": []}  # opts out of the template's token
    raw["models"]["m5"]["secrets"] = ["hf", "s3-creds"]
    raw["modelGroups"]["g"]["models"] = ["m4"]
    catalog = build_catalog(raw)
    assert catalog.models["m4"].secrets == ("hf",)
    assert catalog.models["m4"].secrets_path == ("templates", "tpl")
    assert catalog.models["m4b"].secrets == ("s3-creds",)
    assert catalog.models["m4c"].secrets == ()
    assert catalog.models["m5"].secrets == ("hf", "s3-creds")
    assert used_secrets(catalog) == {"hf": ["m4", "m5"], "s3-creds": ["m4b", "m5"]}


def test_secret_names_are_dns_labels_listed_once_with_their_config_path() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["secrets"] = ["HF_Token"]
    raw["models"]["m5"]["secrets"] = ["hf", "x" * 41]
    found = errors_of(raw)
    assert set(found) == {"sgp-infra:templates.tpl.secrets[0]", "sgp-infra:models.m5.secrets[1]"}
    assert "DNS-1123" in found["sgp-infra:templates.tpl.secrets[0]"]
    assert "at most 40" in found["sgp-infra:models.m5.secrets[1]"]
    raw = raw_catalog()
    raw["models"]["m5"]["secrets"] = ["hf", "gh", "hf"]
    found = errors_of(raw)
    assert list(found) == ["sgp-infra:models.m5.secrets"]
    assert "'hf'" in found["sgp-infra:models.m5.secrets"] and "once" in found["sgp-infra:models.m5.secrets"]


def test_the_model_secrets_shape_is_checked_without_quoting_a_value() -> None:
    problems = model_secrets_problems({"hf": {"HF_TOKEN": TOKEN, "1BAD": TOKEN, "N": 5}, "Bad_Name": {"A": "b"},
                                       "empty": {}})
    found = {e.path: e.message for e in problems}
    assert set(found) == {"sgp-infra:modelSecrets.hf.1BAD", "sgp-infra:modelSecrets.hf.N",
                          "sgp-infra:modelSecrets.Bad_Name", "sgp-infra:modelSecrets.empty"}
    assert TOKEN not in json.dumps(found)
    assert [e.path for e in model_secrets_problems([TOKEN])] == ["sgp-infra:modelSecrets"]
    assert TOKEN not in str(model_secrets_problems([TOKEN]))


def test_model_secrets_in_clear_are_refused_and_as_a_secret_never_enter_the_catalogue() -> None:
    config = {f"sgp-infra:{k}": v for k, v in raw_catalog().items()}
    clear = {**config, "sgp-infra:modelSecrets": {"hf": {"HF_TOKEN": TOKEN}}}
    with pytest.raises(CatalogInvalid) as caught:
        raw_from_stack_doc({"config": clear})
    [error] = caught.value.errors
    assert error.path == "sgp-infra:modelSecrets" and "pulumi config set --secret sgp-infra:modelSecrets" in \
        error.message
    assert TOKEN not in str(caught.value)
    # Set whole (--secret) or variable by variable (--secret --path): accepted, never in the catalogue.
    for value in ({"secure": "v1:abc"}, {"hf": {"HF_TOKEN": {"secure": "v1:abc"}}}):
        raw = raw_from_stack_doc({"config": {**config, "sgp-infra:modelSecrets": value}})
        assert "modelSecrets" not in raw
    # A variable by variable form with one value in clear is refused.
    mixed = {"hf": {"HF_TOKEN": {"secure": "v1:abc"}, "OTHER": "clear"}}
    with pytest.raises(CatalogInvalid):
        raw_from_stack_doc({"config": {**config, "sgp-infra:modelSecrets": mixed}})


# -- the planner ----------------------------------------------------------------------------------


def secret_catalog() -> dict[str, Any]:
    raw = raw_catalog()
    raw["templates"]["tpl"]["secrets"] = ["hf"]
    raw["models"]["m5"]["secrets"] = ["hf", "s3-creds"]
    return raw


def test_the_planner_gives_each_secret_s_metadata_and_each_container_its_env_from() -> None:
    assert model_secret_name("hf") == MODEL_SECRET_PREFIX + "hf" == "sgp-infra-model-secret-hf"
    secret = model_secret("hf", "models")
    assert secret["kind"] == "Secret" and secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == "sgp-infra-model-secret-hf" and secret["metadata"]["namespace"] == "models"
    assert secret["metadata"]["labels"]["app.kubernetes.io/instance"] == "sgp-infra-model-secret-hf"
    assert secret["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sgp-infra"
    assert "data" not in secret and "stringData" not in secret  # values come from Pulumi, never the planner
    plan = plan_raw(secret_catalog())
    assert container(plan, "m5")["envFrom"] == [{"secretRef": {"name": "sgp-infra-model-secret-hf"}},
                                                {"secretRef": {"name": "sgp-infra-model-secret-s3-creds"}}]
    assert container(plan, "m4")["envFrom"] == [{"secretRef": {"name": "sgp-infra-model-secret-hf"}}]
    # Only the model container: an ASYNC pod's forwarder sidecar never gets the model's tokens.
    raw = secret_catalog()
    raw["models"]["m5"]["vendor_configuration"]["model_infra"]["endpoint_type"] = "async"
    [model_container, forwarder] = pod_spec(plan_raw(raw), "m5")["containers"]
    assert len(model_container["envFrom"]) == 2 and "envFrom" not in forwarder
    plain = plan_raw(raw_catalog())
    assert "envFrom" not in container(plain, "m4")
    assert not [m for m in plan.manifests if m["kind"] == "Secret"]  # the planner's manifests hold no Secret


def test_planned_deployment_and_secret_are_valid_kubernetes_objects() -> None:
    plan = plan_raw(secret_catalog())
    deployment = find(plan, "Deployment", "m5")
    assert deployment is not None
    validate(deployment)
    validate({**model_secret("s3-creds", "models"), "stringData": {"AWS_ACCESS_KEY_ID": "x"}})


def test_missing_secrets_and_clashing_variables_are_errors_at_the_list_that_names_them() -> None:
    raw = secret_catalog()
    raw["models"]["m4b"] = copy.deepcopy(raw["models"]["m4"])  # a second model of the template
    catalog = build_catalog(raw)
    found = {e.path: e.message for e in model_secret_problems(catalog, {"hf": ["HF_TOKEN"]})}
    # The template's list is reported once, not per model; the model's own at its own path.
    assert set(found) == {"sgp-infra:models.m5.secrets[1]"}
    assert "no secret 's3-creds' in sgp-infra:modelSecrets (secrets: hf)" in found["sgp-infra:models.m5.secrets[1]"]
    found = {e.path: e.message for e in model_secret_problems(catalog, None)}
    assert set(found) == {"sgp-infra:templates.tpl.secrets[0]", "sgp-infra:models.m5.secrets[0]",
                          "sgp-infra:models.m5.secrets[1]"}
    assert "(secrets: none)" in found["sgp-infra:templates.tpl.secrets[0]"]
    # The template's plain env sets STATIC; a secret setting it too would lose, silently: an error.
    found = {e.path: e.message for e in model_secret_problems(catalog, {"hf": ["STATIC"], "s3-creds": ["STATIC"]})}
    assert "plain env" in found["sgp-infra:templates.tpl.secrets[0]"]
    assert "secret 'hf' of model 'm5'" in found["sgp-infra:models.m5.secrets[1]"]
    assert model_secret_problems(catalog, {"hf": ["HF_TOKEN"], "s3-creds": ["AWS_KEY"]}) == []


# -- the Pulumi program ---------------------------------------------------------------------------


def prod_config_with_secrets() -> dict[str, Any]:
    prod = next(p for p in STACKS if p.name == "Pulumi.prod.yaml")
    config = yaml.safe_load(prod.read_text())["config"]
    config["sgp-infra:templates"]["vllm-chat"]["secrets"] = ["hf"]
    return config


def test_the_program_creates_the_secret_and_the_token_reaches_nothing_else(
        program_run: tuple[Recorder, OutputsMonitor], caplog: pytest.LogCaptureFixture) -> None:
    recorder, monitor = program_run
    config = prod_config_with_secrets()
    config["sgp-infra:modelSecrets"] = {"hf": {"HF_TOKEN": TOKEN}, "unused": {"X": "y"}}
    run_main(config, ["sgp-infra:modelSecrets"])
    secrets = [r for r in recorder.registered if r.type == "kubernetes:core/v1:Secret"
               and r.inputs["metadata"]["name"].startswith(MODEL_SECRET_PREFIX)]
    assert [r.name for r in secrets] == ["sgp-infra-secrets-hf"]  # one per listed secret, not for "unused"
    [secret] = secrets
    assert secret.inputs["metadata"] == model_secret("hf", "sgp-models")["metadata"]
    assert secret.parent.endswith("sgp-infra:index:ModelSecrets::sgp-infra-secrets")
    # The value reaches the engine wrapped as a secret (Pulumi's secret signature).
    wrapped = secret.inputs["stringData"]
    assert is_secret(wrapped)
    assert wrapped["value"] == {"HF_TOKEN": TOKEN}
    # Every model of the template gets envFrom, and its Deployment waits for the Secret.
    catalog = load_file_of(config)
    users = used_secrets(catalog)["hf"]
    assert users
    for name in users:
        model = catalog.models[name]
        [deployment] = [r for r in recorder.registered if r.type == "kubernetes:apps/v1:Deployment"
                        and r.inputs["metadata"]["name"] == model.object_name]
        containers = deployment.inputs["spec"]["template"]["spec"]["containers"]
        assert containers[0]["envFrom"] == env_from(model)
        assert any(dep.endswith("kubernetes:core/v1:Secret::sgp-infra-secrets-hf") for dep in deployment.dependencies)
    # The token is in that Secret and nowhere else: no other resource, no output, no log line.
    holding = [r.name for r in recorder.registered if TOKEN in json.dumps(r.inputs, default=str)]
    assert holding == ["sgp-infra-secrets-hf"]
    assert monitor.outputs and not [o for o in monitor.outputs if TOKEN in o]
    assert TOKEN not in caplog.text
    assert "sgp-infra:modelSecrets.unused is listed by no template or model" in caplog.text


def load_file_of(config: dict[str, Any]) -> Any:
    doc = {"config": {k: v for k, v in config.items() if k != "sgp-infra:modelSecrets"}}
    return build_catalog(raw_from_stack_doc(doc))


def test_a_secret_no_entry_holds_stops_the_program_naming_its_path(
        program_run: tuple[Recorder, OutputsMonitor]) -> None:
    recorder, _ = program_run
    config = prod_config_with_secrets()
    config["sgp-infra:modelSecrets"] = {"gh": {"GH_TOKEN": TOKEN}}
    with pytest.raises(pulumi.RunError) as caught:
        run_main(config, ["sgp-infra:modelSecrets"])
    text = str(caught.value)
    assert "sgp-infra:templates.vllm-chat.secrets[0]: no secret 'hf' in sgp-infra:modelSecrets" in text
    assert "(secrets: gh)" in text and TOKEN not in text
    assert not [r for r in recorder.registered if r.type.startswith("kubernetes:")]


def test_model_secrets_in_clear_stop_the_program(program_run: tuple[Recorder, OutputsMonitor]) -> None:
    config = prod_config_with_secrets()
    config["sgp-infra:modelSecrets"] = {"hf": {"HF_TOKEN": TOKEN}}
    pulumi.runtime.set_all_config(engine_config(config), [])  # set without --secret
    with pytest.raises(CatalogInvalid) as caught:
        load_pulumi()
    assert [e.path for e in caught.value.errors] == ["sgp-infra:modelSecrets"]
    assert "set it as a secret" in str(caught.value) and TOKEN not in str(caught.value)


# -- render and validate from a stack file ---------------------------------------------------------


def test_render_plans_the_env_from_and_writes_no_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = prod_config_with_secrets()
    config["sgp-infra:modelSecrets"] = {"secure": "v1:AAAAciphertext"}
    stack = tmp_path / "Pulumi.t.yaml"
    stack.write_text(yaml.safe_dump({"config": config}))
    assert main(["validate", "--config-file", str(stack)]) == 0
    assert "catalogue valid" in capsys.readouterr().out
    assert main(["render", "--config-file", str(stack), "--out", "-"]) == 0
    captured = capsys.readouterr()
    rendered = list(yaml.safe_load_all(captured.out))
    assert not [m for m in rendered if m["kind"] == "Secret"]
    assert "ciphertext" not in captured.out
    catalog = load_file(stack)
    user = catalog.models[used_secrets(catalog)["hf"][0]]
    [deployment] = [m for m in rendered if m["kind"] == "Deployment" and m["metadata"]["name"] == user.object_name]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"] == env_from(user)
    assert deployment == find(plan_catalog(catalog), "Deployment", user.object_name)
    assert "sgp-infra-model-secret-hf" in captured.err and "pulumi up" in captured.err


# -- the components as a library ------------------------------------------------------------------


@pulumi.runtime.test
def test_model_catalog_takes_the_values_as_an_argument(recorder: Any) -> Any:
    catalog = build_catalog(secret_catalog())
    values = {"hf": {"HF_TOKEN": TOKEN}, "s3-creds": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "k"}}
    models = ModelCatalog("lib", {"catalog": catalog, "model_secrets": values})
    assert sorted(models.model_secrets.secrets) == ["hf", "s3-creds"]

    def check(_: Any) -> None:
        typ, secret = recorder.registered["lib-secrets-hf"]
        assert typ == "kubernetes:core/v1:Secret"
        assert secret["metadata"]["name"] == "sgp-infra-model-secret-hf"
        assert is_secret(secret["stringData"])
        assert secret["stringData"]["value"] == {"HF_TOKEN": TOKEN}
        others = {n: inputs for n, (_t, inputs) in recorder.registered.items() if n != "lib-secrets-hf"}
        assert TOKEN not in json.dumps(others, default=str)

    urns = [s.urn for s in models.model_secrets.secrets.values()] + [e.urn for e in models.endpoints.values()]
    return pulumi.Output.all(*urns).apply(check)


def test_model_catalog_refuses_a_listed_secret_its_values_lack(recorder: Any) -> None:
    catalog = build_catalog(secret_catalog())
    with pytest.raises(pulumi.RunError) as caught:
        ModelCatalog("lib", {"catalog": catalog, "model_secrets": {"hf": {"HF_TOKEN": TOKEN}}})
    assert "sgp-infra:models.m5.secrets[1]: no secret 's3-creds'" in str(caught.value)
    assert TOKEN not in str(caught.value) and not recorder.registered
    with pytest.raises(pulumi.RunError) as caught:
        ModelCatalog("lib", {"catalog": catalog, "model_secrets": {"hf": TOKEN, "s3-creds": {"A": "b"}}})
    assert "sgp-infra:modelSecrets.hf: must be a non-empty map" in str(caught.value) and TOKEN not in str(caught.value)


def test_the_stack_schema_agrees_on_model_secrets() -> None:
    import jsonschema

    from sgp_infra.catalog.schema import stack_schema

    validator = jsonschema.Draft202012Validator(stack_schema())
    config = {f"sgp-infra:{k}": v for k, v in secret_catalog().items()}

    def schema_errors(**extra: Any) -> list[str]:
        return [e.message for e in validator.iter_errors({"config": {**config, **extra}})]

    assert schema_errors() == []
    assert schema_errors(**{"sgp-infra:modelSecrets": {"secure": "v1:abc"}}) == []
    assert schema_errors(**{"sgp-infra:modelSecrets": {"hf": {"HF_TOKEN": {"secure": "v1:abc"}}}}) == []
    assert schema_errors(**{"sgp-infra:modelSecrets": {"hf": {"HF_TOKEN": "in clear"}}})
    bad = copy.deepcopy(config)
    bad["sgp-infra:models"]["m5"]["secrets"] = ["HF"]
    assert [e.message for e in validator.iter_errors({"config": bad})]
