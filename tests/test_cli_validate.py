"""``python -m sgp_infra validate``: exit codes, summary, error list, help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from catalog_fixtures import ROOT, raw_catalog
from sgp_infra.cli import main


def write_stack(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text(yaml.safe_dump({"config": {f"sgp-infra:{k}": v for k, v in raw.items()}}))
    return path


def test_valid_stack_prints_one_summary_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "sgp_infra", "validate", "--stack", "dev"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "1 template, 3 models (1 v4, 2 v5), 1 group" in lines[0]
    assert "nvidia-tesla-t4 0/1" in lines[0]


def test_prod_summary_counts_gpus_by_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config-file", str(ROOT / "stacks" / "Pulumi.prod.yaml")]) == 0
    out = capsys.readouterr().out
    assert "nvidia-hopper-h100 8/16" in out and "nvidia-hopper-h100-1g20gb 0/6" in out


def test_invalid_stack_lists_every_problem_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["model_creation_parameters"] = {}
    raw["models"]["m5"]["vendor_configuration"]["model_infra"]["min_workers"] = 9
    assert main(["validate", "--config-file", str(write_stack(tmp_path, raw))]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "2 problems" in captured.err
    assert "sgp-infra:models.m4.model_creation_parameters.weights: required by template 'tpl'" in captured.err
    assert "sgp-infra:models.m5.vendor_configuration.model_infra.min_workers" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(("content", "fragment"), [
    (None, "no such stack config file"),
    ("config: [1, 2", "not valid YAML"),
    ("- a list", "a map with a 'config' key"),
    ('{"config": [1, 2', "not valid JSON"),
    ("[1]", "a map with a 'config' key"),
    ("config: hello", "Pulumi.x.yaml: the stack file's 'config' must be a map"),
])
def test_unreadable_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None,
                                 fragment: str) -> None:
    # JSON-looking contents go to a .json file: the published catalogue's format.
    path = tmp_path / ("catalog.json" if content and content[0] in "{[" else "Pulumi.x.yaml")
    if content is not None:
        path.write_text(content)
    assert main(["validate", "--config-file", str(path)]) == 2
    assert fragment in capsys.readouterr().err


def test_broken_yaml_names_the_files_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Pulumi.x.yaml"
    path.write_text("config:\n  sgp-infra:accountId: a\n\tsgp-infra:namespace: b\n")
    assert main(["validate", "--config-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: not valid YAML: line 3, column 1: found a tab character" in err
    assert "<unicode string>" not in err


def test_a_key_written_twice_is_an_error_not_a_silent_override(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # A model block pasted under an existing name: YAML would keep the last one, Pulumi rejects the file.
    text = (ROOT / "stacks" / "Pulumi.dev.yaml").read_text().replace("\n    t4-embedder:\n", "\n    echo:\n")
    path = tmp_path / "Pulumi.x.yaml"
    path.write_text(text)
    first = text.splitlines().index("    echo:") + 1
    second = text.splitlines().index("    echo:", first) + 1
    assert main(["validate", "--config-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"line {second}, column 5: key 'echo' is written twice (first at line {first})" in err


def test_yaml_merge_keys_may_still_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Pulumi.x.yaml"
    path.write_text("config:\n  sgp-infra:accountId: a\n  team:x: &base {p: 1}\n  team:y:\n    <<: *base\n"
                    "    p: 2\n")
    assert main(["validate", "--config-file", str(path)]) == 0


def test_keys_sgp_infra_would_skip_are_named_with_the_key_to_write(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Pulumi.x.yaml"
    path.write_text("config:\n  accountId: a\n  sgp_infra:models: {}\n  sgp-infra:accountId: a\n"
                    "  kubernetes:context: c\n  aws:region: r\n")
    assert main(["validate", "--config-file", str(path)]) == 1
    err = capsys.readouterr().err
    assert "2 problems" in err  # other namespaces (kubernetes:, aws:) are not sgp-infra's business
    assert "  - accountId: a config key needs a namespace; sgp-infra reads sgp-infra:accountId\n" in err
    assert "  - sgp_infra:models: namespace 'sgp_infra' is not 'sgp-infra'; did you mean sgp-infra:models?\n" in err


def test_the_published_json_catalogue_validates_like_its_stack(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from sgp_infra.catalog import load_file
    from sgp_infra.plan.api import CATALOG_KEY, catalog_document

    source = ROOT / "stacks" / "Pulumi.dev.yaml"
    published = tmp_path / CATALOG_KEY
    published.write_text(catalog_document(load_file(source)), encoding="utf-8")
    assert main(["validate", "--config-file", str(published)]) == 0
    assert load_file(published).stack_document() == load_file(source).stack_document()


def test_unknown_stack_name_exits_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["validate", "--stack", "nope"]) == 2
    assert "Pulumi.nope.yaml" in capsys.readouterr().err


def test_a_mistyped_stack_name_suggests_the_closest_and_lists_the_stacks(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["validate", "--stack", "prdo"]) == 2
    err = capsys.readouterr().err
    assert "no stack 'prdo'" in err
    assert "did you mean --stack prod?" in err
    assert "(stacks: dev, prod)" in err


def test_a_stack_name_outside_the_project_says_where_to_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PULUMI_STACK", "dev")
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "no stack 'dev' (from $PULUMI_STACK)" in err
    assert "run inside the project" in err and "did you mean" not in err


def test_a_mistyped_option_names_the_command_and_the_closest_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", "--stak", "dev"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m sgp_infra validate ")  # the command's usage, not the top level's
    assert "unrecognized arguments: --stak dev (--stak: did you mean --stack?)" in err
    with pytest.raises(SystemExit):
        main(["render", "--stack", "dev", "--out", "x", "stray"])
    assert "render: error: unrecognized arguments: stray\n" in capsys.readouterr().err


def test_no_source_given(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULUMI_STACK", raising=False)
    assert main(["validate"]) == 2
    assert "--stack NAME" in capsys.readouterr().err


def test_help_explains_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--stack" in out and "--config-file" in out and "config path" in out


def test_stack_and_config_file_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", "--stack", "dev", "--config-file", "x"])
    assert info.value.code == 2


def test_validate_reports_problems_only_the_planner_sees(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = raw_catalog()
    raw["autoscaler"] = "hpa"  # the HPA cannot scale to zero; m5 has min_workers: 0
    assert main(["validate", "--config-file", str(write_stack(tmp_path, raw))]) == 1
    err = capsys.readouterr().err
    assert "sgp-infra:models.m5.vendor_configuration.model_infra.min_workers" in err


def test_catalogue_commands_work_without_the_api_extra() -> None:
    """`pip install sgp-infra` (no [api] extra) must still validate and render."""
    blocked = ["fastapi", "httpx", "uvicorn", "aiohttp", "orjson", "prometheus_client", "kubernetes_asyncio",
               "jsonschema", "starlette"]
    code = ("import sys\n"
            f"for m in {blocked!r}: sys.modules[m] = None\n"
            "from sgp_infra.cli import main\n"
            "sys.exit(main(['validate', '--stack', 'dev']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "catalogue valid" in proc.stdout


def test_a_planned_catalogue_is_frozen_out_of_the_garbage_collectors_scans(
        capsys: pytest.CaptureFixture[str]) -> None:
    import gc

    gc.unfreeze()
    assert main(["validate", "--config-file", str(ROOT / "stacks" / "nope.yaml")]) == 2
    modules_only = gc.get_freeze_count()  # frozen before loading: what was imported
    assert modules_only > 0
    gc.unfreeze()
    assert main(["validate", "--config-file", str(ROOT / "stacks" / "Pulumi.dev.yaml")]) == 0
    # The catalogue and its manifests joined them (conftest unfreezes after the test).
    assert gc.get_freeze_count() > modules_only
    capsys.readouterr()
