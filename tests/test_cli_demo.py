"""``python -m sgp_infra demo``: the README's main job, end to end on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from catalog_fixtures import ROOT


def test_demo_runs_the_whole_flow_on_the_dev_stack(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SGP_INFRA_API_KEYS"}
    proc = subprocess.run([sys.executable, "-m", "sgp_infra", "demo", "--stack", "dev", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "catalogue valid" in out
    assert any(p.name.endswith("deployment-echo.yaml") for p in tmp_path.iterdir())
    assert "v4 GET /v4/models: ['echo', 't4-embedder', 'transcriber']" in out
    # the echo went through the API to a real model server and back
    assert "echo: v4 completions -> [['hello from sgp-infra', ['echo: hello from sgp-infra']]]" in out
    assert "t4-embedder: v5 inference ->" in out and "hello from sgp-infra" in out.split("t4-embedder: v5")[1]
    # the ASYNC model: a task queued on the local nats-server, run by its forwarder, polled to SUCCESS
    line = next(l for l in out.splitlines() if l.startswith("transcriber: POST"))
    assert "POST /v1/async-tasks -> task" in line and "SUCCESS" in line and "hello from sgp-infra" in line


def test_demo_invalid_catalogue_exits_1_and_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  sgp-infra:accountId: a\n  sgp-infra:models: {m: {model_type: COMPLETION}}\n")
    proc = subprocess.run([sys.executable, "-m", "sgp_infra", "demo", "--config-file", str(bad),
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "sgp-infra:models.m.model_template_id" in proc.stderr
    assert "start" not in proc.stdout and not (tmp_path / "out").exists()
