"""``python -m sgp_infra render``: exactly the planner's manifests, as files or one stream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plan_fixtures import ROOT, STACKS, raw_catalog
from sgp_infra.catalog import load_file
from sgp_infra.catalog.sources import stack_name_of
from sgp_infra.cli import main
from sgp_infra.cli.render import file_name
from sgp_infra.plan import plan_catalog
from sgp_infra.plan.api import plan_api


def write_stack(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text(yaml.safe_dump({"config": {f"sgp-infra:{k}": v for k, v in raw.items()}}))
    return path


@pytest.mark.parametrize("stack", STACKS, ids=[p.name for p in STACKS])
def test_out_dir_writes_one_file_per_planned_object(stack: Path, tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    assert main(["render", "--config-file", str(stack), "--out", str(out)]) == 0
    files = sorted(out.iterdir())
    # + the API's objects, told the stack the file's name says (Pulumi.<stack>.yaml), as `pulumi up` would
    manifests = plan_catalog(load_file(stack)).manifests + plan_api(load_file(stack), stack_name_of(stack))
    assert len(files) == len(manifests)
    for path, manifest in zip(files, manifests, strict=True):
        text = path.read_text()
        assert "&id" not in text and "*id" not in text  # no YAML aliases
        assert yaml.safe_load(text) == manifest
        assert path.name.endswith(f"-{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml")


def test_rerender_removes_files_of_objects_no_longer_planned_and_keeps_others(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = raw_catalog()
    out = tmp_path / "rendered"
    assert main(["render", "--config-file", str(write_stack(tmp_path, raw)), "--out", str(out)]) == 0
    before = {p.name for p in out.iterdir()}
    (out / "kustomization.yaml").write_text("resources: []\n")  # the user's own file
    gone = sorted(raw["models"])[0]
    del raw["models"][gone]
    raw.pop("modelGroups", None)  # groups may name the removed model
    capsys.readouterr()
    assert main(["render", "--config-file", str(write_stack(tmp_path, raw)), "--out", str(out)]) == 0
    after = {p.name for p in out.iterdir()}
    catalog = load_file(write_stack(tmp_path, raw))
    planned = plan_catalog(catalog).manifests + plan_api(catalog, "t")
    assert after == {file_name(i, m) for i, m in enumerate(planned)} | {"kustomization.yaml"}
    assert not any(f"-{gone}.yaml" in name for name in after)
    removed = len(before - after)
    assert removed > 0
    assert f"removed {removed} stale file" in capsys.readouterr().err


def test_stdout_stream_by_stack_name_through_the_real_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "sgp_infra", "render", "--stack", "dev", "--out", "-"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    docs = list(yaml.safe_load_all(proc.stdout))
    dev = load_file(ROOT / "stacks" / "Pulumi.dev.yaml")
    assert docs == plan_catalog(dev).manifests + plan_api(dev, "dev")


def test_invalid_catalogue_lists_problems_and_writes_nothing(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["model_creation_parameters"] = {}
    out = tmp_path / "out"
    assert main(["render", "--config-file", str(write_stack(tmp_path, raw)), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "sgp-infra:models.m4.model_creation_parameters.weights" in err
    assert not out.exists()


def test_planning_problems_list_every_path_and_write_nothing(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    raw = raw_catalog()
    raw["gpuProfile"] = "karpenter"
    raw["autoscaler"] = "hpa"
    raw["models"]["m5"]["vendor_configuration"]["model_infra"]["gpu_type"] = "nvidia-hopper-h100-1g20gb"
    raw["models"]["m5"]["vendor_configuration"]["model_infra"]["gpus"] = 1
    assert main(["render", "--config-file", str(write_stack(tmp_path, raw)), "--out", "-"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "sgp-infra:models.m5.vendor_configuration.model_infra.gpu_type" in captured.err
    assert "sgp-infra:models.m5.vendor_configuration.model_infra.min_workers" in captured.err
    assert "Traceback" not in captured.err


def test_out_that_is_a_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file.yaml"
    target.write_text("keep me")
    assert main(["render", "--config-file", str(ROOT / "stacks" / "Pulumi.dev.yaml"), "--out", str(target)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_missing_stack_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--config-file", str(tmp_path / "nope.yaml"), "--out", "-"]) == 2
    assert "no such stack config file" in capsys.readouterr().err


def test_out_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["render", "--stack", "dev"])
    assert exited.value.code == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_stdout_that_cannot_be_written_is_an_error_not_a_traceback() -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "sgp_infra", "render", "--stack", "dev", "--out", "-"],
                              cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: cannot write to stdout: No space left on device"
