"""405 answers name the real stack file and the ``--stack`` flag of the commands they suggest.

``serve --stack NAME`` names ``stacks/Pulumi.NAME.yaml``; ``serve --config-file
PATH`` names PATH; in a cluster the planner passes the stack name to the API
container (``SGP_INFRA_STACK``), which wins over the published copy it reads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import httpx
import pytest

from api_helpers import ROOT, running
from sgp_infra.api import create_app
from sgp_infra.api.writes import config_source
from sgp_infra.catalog import load_file
from sgp_infra.catalog.sources import stack_name_of
from sgp_infra.cli.serve import write_target
from sgp_infra.plan.api import STACK_ENV, plan_api
from api_helpers import free_port, wait_ready

DEV = ROOT / "stacks" / "Pulumi.dev.yaml"
KEY = "k-0123456789"


@pytest.mark.parametrize("stack, config_file, shown, flags", [
    ("prod", None, "stacks/Pulumi.prod.yaml", " --stack prod"),
    ("prod", "/etc/sgp-infra/catalog.json", "stacks/Pulumi.prod.yaml", " --stack prod"),
    (None, "conf/Pulumi.staging.yaml", "conf/Pulumi.staging.yaml",
     " --stack staging --config-file conf/Pulumi.staging.yaml"),
    (None, "my catalog.yaml", "my catalog.yaml", " --config-file 'my catalog.yaml'"),
    (None, None, "stacks/Pulumi.<stack>.yaml", " --stack <stack>"),
])
def test_config_source(stack: Optional[str], config_file: Optional[str], shown: str, flags: str) -> None:
    assert config_source(stack, config_file) == (shown, flags)


@pytest.mark.parametrize("name, stack", [("Pulumi.dev.yaml", "dev"), ("a/Pulumi.x.y.yml", "x.y"),
                                         ("catalog.yaml", None), ("Pulumi.yaml", None)])
def test_stack_name_of(name: str, stack: Optional[str]) -> None:
    assert stack_name_of(name) == stack


def _args(stack: Optional[str] = None, config_file: Optional[str] = None) -> argparse.Namespace:
    return argparse.Namespace(stack=stack, config_file=config_file)


def test_serve_write_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STACK_ENV, raising=False)
    monkeypatch.delenv("PULUMI_STACK", raising=False)
    assert write_target(_args(stack="dev")) == ("dev", None)
    assert write_target(_args(config_file="x/Pulumi.a.yaml")) == (None, "x/Pulumi.a.yaml")
    assert write_target(_args()) == (None, None)
    monkeypatch.setenv("PULUMI_STACK", "p")
    assert write_target(_args()) == ("p", None)
    # in a pod: the published copy is read, the stack the planner passed is named
    monkeypatch.setenv(STACK_ENV, "prod")
    assert write_target(_args(config_file="/etc/sgp-infra/catalog.json")) == ("prod", None)
    assert write_target(_args(stack="dev")) == ("dev", None)


def _refusal(stack: Optional[str], config_file: Optional[str]) -> dict:
    catalog = load_file(DEV)
    app = create_app(catalog, api_keys={KEY: frozenset({"dev-account"})}, stack=stack, config_file=config_file)
    with running(app) as url:
        r = httpx.patch(f"{url}/v4/models/echo", json={"description": "new"}, headers={"x-api-key": KEY})
    assert r.status_code == 405
    return r.json()


def test_405_with_a_stack_names_its_file_and_flag() -> None:
    body = _refusal("prod", None)
    assert body["config_file"] == "stacks/Pulumi.prod.yaml"
    assert "(stacks/Pulumi.prod.yaml)" in body["detail"] and "`pulumi up --stack prod`" in body["detail"]
    assert body["commands"] == ["pulumi config set --stack prod --path sgp-infra:models.echo.description new"]


def test_405_with_a_config_file_names_that_file() -> None:
    body = _refusal(None, "elsewhere/Pulumi.team.yaml")
    assert body["config_file"] == "elsewhere/Pulumi.team.yaml"
    assert body["commands"] == ["pulumi config set --stack team --config-file elsewhere/Pulumi.team.yaml "
                                "--path sgp-infra:models.echo.description new"]
    assert "<stack>" not in body["detail"]


def test_serve_config_file_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.mine.yaml"
    shutil.copy(DEV, path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SGP_INFRA_API_KEYS", STACK_ENV, "PULUMI_STACK")}
    proc = subprocess.Popen([sys.executable, "-m", "sgp_infra", "serve", "--config-file", str(path), "--port",
                             str(port), "--status", "none", "--no-access-log"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(proc, port)
        r = httpx.delete(f"http://127.0.0.1:{port}/v4/models/echo", headers={"x-api-key": "sgp-infra-dev-key"})
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert r.status_code == 405
    assert r.json()["config_file"] == str(path)
    assert r.json()["commands"] == [f"pulumi config rm --stack mine --config-file {path} --path sgp-infra:models.echo"]


def test_the_planner_passes_the_stack_to_the_api_container() -> None:
    catalog = load_file(DEV)
    container = next(m for m in plan_api(catalog, "dev") if m["kind"] == "Deployment")[
        "spec"]["template"]["spec"]["containers"][0]
    assert {"name": STACK_ENV, "value": "dev"} in container["env"]
    assert "--config-file" in container["args"]  # it reads the published copy, and names the stack's file
    bare = next(m for m in plan_api(catalog) if m["kind"] == "Deployment")
    assert all(e["name"] != STACK_ENV for e in bare["spec"]["template"]["spec"]["containers"][0]["env"])


def test_render_tells_the_api_its_stack(tmp_path: Path) -> None:
    from sgp_infra.cli import main

    assert main(["render", "--stack", "dev", "--out", str(tmp_path)]) == 0
    text = next(tmp_path.glob("*-deployment-sgp-infra-api.yaml")).read_text()
    assert f"name: {STACK_ENV}\n" in text and "value: dev\n" in text
