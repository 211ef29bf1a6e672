"""NATS credentials (``sgp-infra:natsCredentials``): config checks, the planned references, the Pulumi program.

The values live in a Pulumi secret and reach one Kubernetes Secret; the
planner decides its metadata and the ``SGP_INFRA_NATS_*`` references of the
API and forwarder containers, and the values appear in nothing else.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from plan_fixtures import ROOT, STACKS
from sgp_infra.catalog import CatalogInvalid, build_catalog, load_pulumi
from sgp_infra.catalog.nats_credentials import nats_credentials_problems
from sgp_infra.catalog.sources import raw_from_stack_doc
from sgp_infra.cli import main
from sgp_infra.components import ModelCatalog
from sgp_infra.plan import plan_catalog
from sgp_infra.plan.api import plan_api
from sgp_infra.plan.nats import NATS_CREDENTIALS_SECRET, credentials_env, credentials_secret
from test_components import Recorder, engine_config
from test_manifest_schemas import validate
from mock_helpers import is_secret
from program_helpers import OutputsMonitor, run_main

PASSWORD = "nats-password-never-published-4242"
EXTERNAL = {"natsUrl": "nats://nats.example.internal:4222", "monitoringEndpoint": "nats.example.internal:8222"}
ENV_NAMES = ["SGP_INFRA_NATS_TOKEN", "SGP_INFRA_NATS_USER", "SGP_INFRA_NATS_PASSWORD"]


def dev_config(**extra: Any) -> dict[str, Any]:
    """The dev stack (one ASYNC model) on an existing NATS, plus ``extra`` keys."""
    dev = next(p for p in STACKS if p.name == "Pulumi.dev.yaml")
    config = yaml.safe_load(dev.read_text())["config"]
    config["sgp-infra:async"] = dict(EXTERNAL)
    config.update(extra)
    return config


def catalog_of(config: dict[str, Any]) -> Any:
    doc = {"config": {k: v for k, v in config.items() if k not in ("sgp-infra:natsCredentials", "sgp-infra:apiKeys")}}
    return build_catalog(raw_from_stack_doc(doc))


# -- the config ------------------------------------------------------------------------------------


def test_the_shape_is_a_token_or_a_user_and_password_and_errors_never_quote_a_value() -> None:
    url = EXTERNAL["natsUrl"]
    assert nats_credentials_problems({"token": PASSWORD}, url) == []
    assert nats_credentials_problems({"user": "u", "password": PASSWORD}, url) == []
    for bad in ({"token": PASSWORD, "user": "u"}, {"user": "u"}, {"password": PASSWORD}, {}, PASSWORD, [PASSWORD],
                {"token": PASSWORD, "extra": PASSWORD}):
        [problem] = nats_credentials_problems(bad, url)
        assert problem.path == "sgp-infra:natsCredentials"
        assert '{"token": ...} or {"user": ..., "password": ...}' in problem.message
        assert PASSWORD not in str(problem)
    problems = nats_credentials_problems({"user": "", "password": 5}, url)
    assert sorted(p.path for p in problems) == ["sgp-infra:natsCredentials.password", "sgp-infra:natsCredentials.user"]


def test_credentials_without_nats_url_are_an_error_about_the_in_cluster_nats() -> None:
    [problem] = nats_credentials_problems({"token": PASSWORD}, None)
    assert problem.path == "sgp-infra:natsCredentials"
    assert "in-cluster NATS" in problem.message and "NetworkPolicy" in problem.message
    assert PASSWORD not in problem.message


def test_credentials_in_clear_are_refused_and_never_read_into_the_catalogue() -> None:
    config = dev_config(**{"sgp-infra:natsCredentials": {"token": PASSWORD}})
    with pytest.raises(CatalogInvalid) as caught:
        raw_from_stack_doc({"config": config})
    [error] = caught.value.errors
    assert error.path == "sgp-infra:natsCredentials" and "set it as a secret" in error.message
    assert "pulumi config set --secret sgp-infra:natsCredentials" in error.message and PASSWORD not in str(error)
    raw = raw_from_stack_doc({"config": {**config, "sgp-infra:natsCredentials": {"secure": "v1:AAAAcipher"}}})
    assert "natsCredentials" not in raw


def test_a_nats_url_with_credentials_points_at_the_secret_key() -> None:
    config = dev_config()
    config["sgp-infra:async"] = {**EXTERNAL, "natsUrl": f"nats://u:{PASSWORD}@nats.example.internal:4222"}
    with pytest.raises(CatalogInvalid) as caught:
        catalog_of(config)
    assert "sgp-infra:natsCredentials" in str(caught.value) and PASSWORD not in str(caught.value)


def test_validate_reports_credentials_without_nats_url_from_the_stack_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = dev_config(**{"sgp-infra:natsCredentials": {"secure": "v1:AAAAciphertext"}})
    stack = tmp_path / "Pulumi.t.yaml"
    stack.write_text(yaml.safe_dump({"config": config}))
    assert main(["validate", "--config-file", str(stack)]) == 0
    capsys.readouterr()
    del config["sgp-infra:async"]
    stack.write_text(yaml.safe_dump({"config": config}))
    assert main(["validate", "--config-file", str(stack)]) != 0
    captured = capsys.readouterr()
    assert "sgp-infra:natsCredentials: is set, but sgp-infra:async.natsUrl is not" in captured.out + captured.err
    assert "ciphertext" not in captured.out + captured.err


# -- the planner -----------------------------------------------------------------------------------


def test_with_nats_url_the_api_and_every_forwarder_reference_the_secret() -> None:
    catalog = catalog_of(dev_config())
    env = credentials_env(catalog.settings)
    assert [e["name"] for e in env] == ENV_NAMES
    assert [e["valueFrom"]["secretKeyRef"] for e in env] == [
        {"name": NATS_CREDENTIALS_SECRET, "key": key, "optional": True} for key in ("token", "user", "password")]
    api = next(m for m in plan_api(catalog) if m["kind"] == "Deployment")
    [container] = api["spec"]["template"]["spec"]["containers"]
    assert [e for e in container["env"] if e["name"].startswith("SGP_INFRA_NATS_")] == env
    plan = plan_catalog(catalog)
    async_models = [m for m in catalog.models.values() if m.is_async]
    assert async_models
    for model in catalog.models.values():
        deployment = next(m for m in plan.models[model.name].manifests if m["kind"] == "Deployment")
        containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
        if model.is_async:
            assert [e for e in containers["forwarder"]["env"] if e["name"].startswith("SGP_INFRA_NATS_")] == env
        # The model container never gets the broker's credentials.
        assert "SGP_INFRA_NATS_" not in json.dumps([c for n, c in containers.items() if n != "forwarder"])
        validate(deployment)
    validate(api)
    secret = credentials_secret(catalog.settings.namespace)
    validate(secret)
    assert secret["metadata"]["name"] == NATS_CREDENTIALS_SECRET and "stringData" not in secret
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"]


def test_the_in_cluster_nats_gets_no_credential_references() -> None:
    config = dev_config()
    del config["sgp-infra:async"]
    catalog = catalog_of(config)
    assert credentials_env(catalog.settings) == []
    assert "SGP_INFRA_NATS_" not in json.dumps([*plan_api(catalog), *plan_catalog(catalog).manifests])


def test_render_writes_no_secret_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = dev_config(**{"sgp-infra:natsCredentials": {"secure": "v1:AAAAciphertext"}})
    stack = tmp_path / "Pulumi.t.yaml"
    stack.write_text(yaml.safe_dump({"config": config}))
    assert main(["render", "--config-file", str(stack), "--out", "-"]) == 0
    captured = capsys.readouterr()
    rendered = list(yaml.safe_load_all(captured.out))
    assert not [m for m in rendered if m["kind"] == "Secret"] and "ciphertext" not in captured.out
    assert "SGP_INFRA_NATS_TOKEN" in captured.out  # the references are rendered
    assert NATS_CREDENTIALS_SECRET in captured.err and "sgp-infra:natsCredentials" in captured.err


# -- the Pulumi program ---------------------------------------------------------------------------


def test_the_program_creates_the_secret_and_the_password_reaches_nothing_else(
        program_run: tuple[Recorder, OutputsMonitor], caplog: pytest.LogCaptureFixture) -> None:
    recorder, monitor = program_run
    config = dev_config(**{"sgp-infra:natsCredentials": {"user": "sgp", "password": PASSWORD},
                           "sgp-infra:apiKeys": {"k" * 20: ["dev-account"]}})
    run_main(config, ["sgp-infra:natsCredentials", "sgp-infra:apiKeys"])
    [secret] = [r for r in recorder.registered if r.type == "kubernetes:core/v1:Secret"
                and r.inputs["metadata"]["name"] == NATS_CREDENTIALS_SECRET]
    assert secret.name == "sgp-infra-nats-credentials"
    assert secret.parent.endswith("sgp-infra:index:ModelCatalog::sgp-infra")
    assert secret.inputs["metadata"] == credentials_secret("sgp-dev")["metadata"]
    wrapped = secret.inputs["stringData"]
    assert is_secret(wrapped)
    assert wrapped["value"] == {"user": "sgp", "password": PASSWORD}
    # The API's Deployment and each ASYNC model's Deployment wait for it.
    catalog = catalog_of(config)
    waiting = [r for r in recorder.registered if r.type == "kubernetes:apps/v1:Deployment"
               and any(d.endswith("kubernetes:core/v1:Secret::sgp-infra-nats-credentials") for d in r.dependencies)]
    expected = {"sgp-infra-api", *(m.object_name for m in catalog.models.values() if m.is_async)}
    assert {r.inputs["metadata"]["name"] for r in waiting} == expected
    # The password is in that Secret and nowhere else: no other resource, no output, no log line.
    holding = [r.name for r in recorder.registered if PASSWORD in json.dumps(r.inputs, default=str)]
    assert holding == ["sgp-infra-nats-credentials"]
    assert monitor.outputs and not [o for o in monitor.outputs if PASSWORD in o]
    assert PASSWORD not in caplog.text


def stopped_program(config: dict[str, Any]) -> str:
    """Run the program on ``config`` (natsCredentials secret), expecting it to stop; its error text.

    Called inside a ``pulumi.runtime.test`` test, which awaits the log calls the
    program makes before it stops (left pending, they would be reported by a later test).
    """
    pulumi.runtime.set_all_config(engine_config(config), ["sgp-infra:natsCredentials"])
    with pytest.raises(pulumi.RunError) as caught:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
    return str(caught.value)


@pulumi.runtime.test
def test_credentials_with_the_in_cluster_nats_stop_the_program(program_run: tuple[Recorder, OutputsMonitor]) -> None:
    recorder, _ = program_run
    config = dev_config(**{"sgp-infra:natsCredentials": {"token": PASSWORD}})
    del config["sgp-infra:async"]
    text = stopped_program(config)
    assert "sgp-infra:natsCredentials: is set, but sgp-infra:async.natsUrl is not" in text and PASSWORD not in text
    assert not [r for r in recorder.registered if r.type.startswith("kubernetes:")]


@pulumi.runtime.test
def test_malformed_credentials_stop_the_program(program_run: tuple[Recorder, OutputsMonitor]) -> None:
    recorder, _ = program_run
    text = stopped_program(dev_config(**{"sgp-infra:natsCredentials": {"user": PASSWORD}}))
    assert "sgp-infra:natsCredentials: must be" in text and PASSWORD not in text
    assert not [r for r in recorder.registered if r.type.startswith("kubernetes:")]


def test_credentials_in_clear_stop_the_program(program_run: tuple[Recorder, OutputsMonitor]) -> None:
    pulumi.runtime.set_all_config(engine_config(dev_config(**{"sgp-infra:natsCredentials": {"token": PASSWORD}})),
                                  [])
    with pytest.raises(CatalogInvalid) as caught:
        load_pulumi()
    assert [e.path for e in caught.value.errors] == ["sgp-infra:natsCredentials"] and PASSWORD not in str(caught.value)


@pulumi.runtime.test
def test_model_catalog_takes_the_credentials_as_an_argument(recorder: Any) -> Any:
    catalog = catalog_of(dev_config())
    models = ModelCatalog("lib", {"catalog": catalog, "nats_credentials": {"token": PASSWORD}})
    assert models.nats_credentials is not None

    def check(_: Any) -> None:
        typ, secret = recorder.registered["lib-nats-credentials"]
        assert typ == "kubernetes:core/v1:Secret" and secret["metadata"]["name"] == NATS_CREDENTIALS_SECRET
        assert secret["stringData"]["value"] == {"token": PASSWORD}
        others = {n: inputs for n, (_t, inputs) in recorder.registered.items() if n != "lib-nats-credentials"}
        assert others and PASSWORD not in json.dumps(others, default=str)

    return pulumi.Output.all(models.nats_credentials.urn, *[e.urn for e in models.endpoints.values()]).apply(check)
