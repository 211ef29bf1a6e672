"""``diff``: crafted catalogue pairs, the GPU arithmetic, file and git-ref bases, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog_fixtures import ROOT, raw_catalog, template, v4_model, v5_model
from sgp_infra.catalog import Catalog, build_catalog
from sgp_infra.cli import main
from sgp_infra.diff import CatalogDiff, EntityDiff, diff_catalogs, to_json_data, to_markdown


def cat(raw: dict[str, Any]) -> Catalog:
    return build_catalog(raw)


def two_models_raw() -> dict[str, Any]:
    """The fixture plus a second model from the same template."""
    raw = raw_catalog()
    raw["models"]["m4b"] = v4_model(model_creation_parameters={"weights": "s3://w/b"})
    return raw


def model(diff: CatalogDiff, name: str) -> EntityDiff:
    return next(d for d in diff.models if d.name == name)


def codes(diff: CatalogDiff) -> list[str]:
    return [w.code for w in diff.warnings]


def changed(mutate: Any, raw: dict[str, Any] | None = None) -> CatalogDiff:
    base = raw or raw_catalog()
    after = json.loads(json.dumps(base))
    mutate(after)
    return diff_catalogs(cat(base), cat(after))


# -- nothing changed ----------------------------------------------------------


def test_identical_catalogues_have_no_changes() -> None:
    diff = diff_catalogs(cat(raw_catalog()), cat(raw_catalog()))
    assert not diff.changed and not diff.warnings and not diff.api_restarts
    assert "no catalogue changes" in to_markdown(diff, "s.yaml", "main")


# -- entities added, removed, changed ----------------------------------------


def test_model_added_and_removed() -> None:
    def mutate(raw: dict[str, Any]) -> None:
        del raw["models"]["m5"]
        raw["models"]["new"] = v5_model(gpu_type="nvidia-hopper-h100", gpus=2, min_workers=1, max_workers=3)

    diff = changed(mutate)
    assert model(diff, "new").status == "added" and "2× nvidia-hopper-h100" in (model(diff, "new").facts or "")
    assert model(diff, "m5").status == "removed"
    assert diff.restarting_models == ()  # added/removed are not restarts of running models


def test_template_and_group_added_and_removed() -> None:
    def mutate(raw: dict[str, Any]) -> None:
        raw["templates"]["tpl2"] = template()
        raw["modelGroups"] = {"h": {"description": "new", "models": ["m5"]}}

    diff = changed(mutate)
    assert [(d.name, d.status) for d in diff.templates] == [("tpl2", "added")]
    assert sorted((d.name, d.status) for d in diff.groups) == [("g", "removed"), ("h", "added")]
    assert next(d for d in diff.groups if d.name == "h").members_added == ("m5",)


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["models"]["m5"]["vendor_configuration"]["model_image"].update(tag="1.3"), "image"),
    (lambda r: r["models"]["m5"]["vendor_configuration"]["model_image"].update(command=["serve", "-v"]), "command"),
    (lambda r: r["models"]["m5"]["vendor_configuration"]["model_image"].update(env_vars={"A": "1"}), "env"),
    (lambda r: r["models"]["m5"]["vendor_configuration"]["model_infra"].update(memory="32Gi"), "memory"),
    (lambda r: r["models"]["m5"]["vendor_configuration"]["model_infra"].update(cpus=8), "cpus"),
    (lambda r: r["models"]["m5"]["vendor_configuration"]["model_infra"].update(gpu_type="nvidia-tesla-t4"),
     "gpu_type"),
    (lambda r: r["models"]["m5"]["vendor_configuration"]["model_infra"].update(gpus=2), "gpus"),
])
def test_pod_changes_restart_the_model(mutate: Any, field: str) -> None:
    diff = changed(mutate)
    d = model(diff, "m5")
    assert d.status == "changed" and d.restarts
    assert field in d.restart_fields
    assert diff.restarting_models == ("m5",)
    assert d.fields, "the edited entry field is listed"
    assert all(f.path.startswith("sgp-infra:models.m5.vendor_configuration.") for f in d.fields)


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["models"]["m4"].update(max_workers=5), "max_workers"),
    (lambda r: r["models"]["m4"].update(min_workers=2, max_workers=3), "min_workers"),
    (lambda r: r["models"]["m4"].update(per_worker=3), "per_worker"),
])
def test_worker_bounds_do_not_restart(mutate: Any, field: str) -> None:
    d = model(changed(mutate), "m4")
    assert not d.restarts and field in d.scale_fields and d.restart_fields == ()


def test_description_is_catalogue_only() -> None:
    diff = changed(lambda r: r["models"]["m4"].update(description="better words"))
    assert diff.api_restarts, "the API serves the new description: its pods roll"
    d = model(diff, "m4")
    assert not d.restarts and not d.scale_fields
    assert [(f.field, f.before, f.after) for f in d.fields] == [("description", None, "better words")]
    assert d.fields[0].path == "sgp-infra:models.m4.description"


def test_creation_parameter_change_restarts_through_injection() -> None:
    d = model(changed(lambda r: r["models"]["m4"].update(model_creation_parameters={"weights": "s3://w/v2"})), "m4")
    assert d.restarts and {"command", "env", "streaming_command"} <= set(d.restart_fields)
    assert any(c.field == "env.MODEL_NAME" and c.after == "s3://w/v2" for c in d.resolved)


# -- templates roll the models built from them ---------------------------------


def test_template_image_change_rolls_every_model_built_from_it() -> None:
    diff = changed(lambda r: r["templates"]["tpl"]["vendor_configuration"]["bundle_config"].update(tag="2.0"),
                   two_models_raw())
    tpl = diff.templates[0]
    assert tpl.status == "changed" and tpl.rolls == ("m4", "m4b")
    assert [f.field for f in tpl.fields] == ["vendor_configuration.bundle_config.tag"]
    for name in ("m4", "m4b"):
        d = model(diff, name)
        assert d.restarts and d.via_template == "tpl" and d.fields == ()
    assert "m5" not in {d.name for d in diff.models}
    assert "template-rolls-models" in codes(diff)
    text = to_markdown(diff, "s.yaml", "main")
    assert "rolls 2 models" in text and "via template `tpl`" in text


def test_template_scaling_change_rolls_nothing() -> None:
    diff = changed(lambda r: r["templates"]["tpl"]["vendor_configuration"]["endpoint_config"].update(max_workers=4),
                   two_models_raw())
    assert diff.templates[0].rolls == () and "template-rolls-models" not in codes(diff)
    assert all(not d.restarts and "max_workers" in d.scale_fields for d in diff.models)


# -- GPU arithmetic -----------------------------------------------------------


def test_gpu_capacity_before_and_after() -> None:
    # base: m4 1×t4 1..2, m5 1×a10 0..2
    def mutate(raw: dict[str, Any]) -> None:
        raw["templates"]["tpl"]["vendor_configuration"]["endpoint_config"].update(gpus=2)  # t4: 2..4
        raw["models"]["m5"]["vendor_configuration"]["model_infra"].update(min_workers=1, max_workers=3)  # a10 1..3
        raw["models"]["h"] = v5_model(gpu_type="nvidia-hopper-h100", gpus=8, min_workers=1, max_workers=2)

    rows = {r.gpu_type: r for r in changed(mutate).gpus}
    assert (rows["nvidia-tesla-t4"].min_before, rows["nvidia-tesla-t4"].min_after) == (1, 2)
    assert (rows["nvidia-tesla-t4"].max_before, rows["nvidia-tesla-t4"].max_after) == (2, 4)
    assert (rows["nvidia-ampere-a10"].min_before, rows["nvidia-ampere-a10"].min_after) == (0, 1)
    assert (rows["nvidia-ampere-a10"].max_before, rows["nvidia-ampere-a10"].max_after) == (2, 3)
    h100 = rows["nvidia-hopper-h100"]
    assert (h100.min_before, h100.min_after, h100.max_before, h100.max_after) == (0, 8, 0, 16)


def test_gpu_type_that_disappears_goes_to_zero() -> None:
    rows = {r.gpu_type: r for r in changed(lambda r: r["models"].pop("m5")).gpus}
    a10 = rows["nvidia-ampere-a10"]
    assert (a10.max_before, a10.max_after) == (2, 0) and a10.changed
    assert not rows["nvidia-tesla-t4"].changed


def test_gpu_quota_exceeded_warns() -> None:
    def mutate(raw: dict[str, Any]) -> None:
        raw["gpuQuota"] = {"nvidia-ampere-a10": 1}

    diff = changed(mutate)
    assert "gpu-quota" in codes(diff)
    assert "| 1 ❗ |" in to_markdown(diff, "s.yaml", "main")


# -- warnings -----------------------------------------------------------------


def test_scale_to_zero_on_high_priority_model_warns() -> None:
    raw = raw_catalog()
    raw["models"]["m5"]["vendor_configuration"]["model_infra"].update(high_priority=True, min_workers=1)
    diff = changed(lambda r: r["models"]["m5"]["vendor_configuration"]["model_infra"].update(min_workers=0), raw)
    assert "high-priority-scale-to-zero" in codes(diff)
    # already at zero in the base: nothing new to warn about
    raw["models"]["m5"]["vendor_configuration"]["model_infra"].update(min_workers=0)
    diff = changed(lambda r: r["models"]["m5"]["vendor_configuration"]["model_infra"].update(max_workers=3), raw)
    assert "high-priority-scale-to-zero" not in codes(diff)


def test_removed_group_member_warns() -> None:
    def mutate(raw: dict[str, Any]) -> None:
        del raw["models"]["m4"]
        raw["modelGroups"]["g"]["models"] = []

    diff = changed(mutate)
    assert "removed-model-in-group" in codes(diff)
    assert next(d for d in diff.groups if d.name == "g").members_removed == ("m4",)


def test_gpu_profile_change_restarts_gpu_models_without_a_field_to_blame() -> None:
    diff = changed(lambda r: r.update(gpuProfile="nfd"))
    assert set(diff.restarting_models) == {"m4", "m5"}
    assert any(c.field == "pod template" for c in model(diff, "m4").resolved)
    assert "settings-gpuProfile" in codes(diff)


def test_no_base_shows_everything_added() -> None:
    diff = diff_catalogs(None, cat(raw_catalog()), "no base here")
    assert {d.status for d in diff.models + diff.templates + diff.groups} == {"added"}
    assert codes(diff) == ["no-base"] and not diff.has_base


def test_json_carries_the_same_content() -> None:
    diff = changed(lambda r: r["models"]["m4"].update(max_workers=5))
    data = json.loads(json.dumps(to_json_data(diff, "s.yaml", "main")))
    assert data["changed"] and data["valid"]
    (m4,) = data["models"]
    assert m4["name"] == "m4" and m4["scale_fields"] == ["max_workers"] and not m4["restarts"]
    t4 = next(g for g in data["gpus"] if g["gpu_type"] == "nvidia-tesla-t4")
    assert t4["max"] == {"before": 2, "after": 5}


# -- the CLI: file base, git-ref base, errors ---------------------------------


def write_stack(path: Path, raw: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"config": {f"sgp-infra:{k}": v for k, v in raw.items()}}))
    return path


def test_cli_file_base_markdown_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_stack(tmp_path / "base.yaml", raw_catalog())
    raw = raw_catalog()
    raw["models"]["m4"]["max_workers"] = 4
    current = write_stack(tmp_path / "Pulumi.t.yaml", raw)
    assert main(["diff", "--config-file", str(current), "--base", str(base)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<!-- sgp-infra catalogue diff:") and "`m4` | changed | no restart" in out
    assert main(["diff", "--config-file", str(current), "--base", str(base), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"][0]["name"] == "m4"


def test_cli_no_changes(capsys: pytest.CaptureFixture[str]) -> None:
    prod = ROOT / "stacks" / "Pulumi.prod.yaml"
    assert main(["diff", "--config-file", str(prod), "--base", str(prod)]) == 0
    assert capsys.readouterr().out.strip() == "no catalogue changes"


def test_cli_invalid_current_explains_removed_group_member(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    base = write_stack(tmp_path / "base.yaml", raw_catalog())
    raw = raw_catalog()
    del raw["models"]["m4"]  # group g still lists it
    current = write_stack(tmp_path / "Pulumi.t.yaml", raw)
    assert main(["diff", "--config-file", str(current), "--base", str(base)]) == 1
    captured = capsys.readouterr()
    assert "sgp-infra:modelGroups.g.models[0]" in captured.out
    assert "model 'm4' is removed by this change but group 'g' still lists it" in captured.out
    assert "is invalid" in captured.err and "Traceback" not in captured.err
    assert main(["diff", "--config-file", str(current), "--base", str(base), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert not data["valid"] and data["warnings"][0]["code"] == "removed-model-in-group"


def test_cli_secret_in_published_config_is_a_listed_problem(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    base = write_stack(tmp_path / "base.yaml", raw_catalog())
    raw = raw_catalog()
    raw["namespace"] = {"secure": "v1:abc"}  # would be published in clear
    current = write_stack(tmp_path / "Pulumi.t.yaml", raw)
    assert main(["diff", "--config-file", str(current), "--base", str(base)]) == 1
    captured = capsys.readouterr()
    assert "sgp-infra:namespace" in captured.out
    assert "only apiKeys, modelSecrets and natsCredentials may be secrets" in captured.out
    assert "is invalid" in captured.err and "Traceback" not in captured.err


def test_cli_missing_stack_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "--config-file", str(tmp_path / "nope.yaml"), "--base", "main"]) == 2
    assert "no such stack config file" in capsys.readouterr().err


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("before the stack existed\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "tag", "before-stack")
    write_stack(repo / "stacks" / "Pulumi.t.yaml", raw_catalog())
    git(repo, "add", "stacks")
    git(repo, "commit", "-q", "-m", "stack")
    return repo


def test_cli_git_ref_base(repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    raw = raw_catalog()
    raw["models"]["m5"]["vendor_configuration"]["model_image"]["tag"] = "9.9"
    stack = write_stack(repo / "stacks" / "Pulumi.t.yaml", raw)  # uncommitted edit, as in a PR checkout
    monkeypatch.chdir(repo)
    assert main(["diff", "--config-file", str(stack), "--base", "main"]) == 0
    out = capsys.readouterr().out
    assert "(base `main`)" in out and "`m5` | changed | 🔄 **restart** (image)" in out
    assert "`stacks/Pulumi.t.yaml`" in out


def test_cli_git_ref_without_the_file_means_everything_added(repo: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    stack = repo / "stacks" / "Pulumi.t.yaml"
    assert main(["diff", "--config-file", str(stack), "--base", "before-stack", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {m["status"] for m in data["models"]} == {"added"} and not data["has_base"]
    assert "does not exist at before-stack" in data["warnings"][0]["message"]


def test_cli_bad_git_ref_exits_2(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = repo / "stacks" / "Pulumi.t.yaml"
    assert main(["diff", "--config-file", str(stack), "--base", "no-such-branch"]) == 2
    err = capsys.readouterr().err
    assert "no such file or git ref" in err and "Traceback" not in err


def test_cli_git_ref_outside_a_repository_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    lonely = tmp_path / "lonely"
    stack = write_stack(lonely / "Pulumi.t.yaml", raw_catalog())
    ceiling = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in ceiling.items():
            mp.setenv(k, v)
        assert main(["diff", "--config-file", str(stack), "--base", "main"]) == 2
    assert "not inside a git repository" in capsys.readouterr().err


def test_cli_invalid_base_is_a_warning_not_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = raw_catalog()
    bad["models"]["m4"]["model_creation_parameters"] = {}
    base = write_stack(tmp_path / "base.yaml", bad)
    current = write_stack(tmp_path / "Pulumi.t.yaml", raw_catalog())
    assert main(["diff", "--config-file", str(current), "--base", str(base)]) == 0
    assert "is invalid (1 problem)" in capsys.readouterr().out


def test_cli_invalid_current_with_non_string_group_member_is_reported_not_raised(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_stack(tmp_path / "base.yaml", raw_catalog())
    raw = raw_catalog()
    del raw["models"]["m4"]
    raw["modelGroups"]["g"]["models"] = [{"name": "m4"}, "m4"]  # a map where a name belongs
    current = write_stack(tmp_path / "Pulumi.t.yaml", raw)
    assert main(["diff", "--config-file", str(current), "--base", str(base)]) == 1
    captured = capsys.readouterr()
    assert "sgp-infra:modelGroups.g.models[0]" in captured.out
    assert "model 'm4' is removed by this change but group 'g' still lists it" in captured.out
    assert "Traceback" not in captured.err


def test_async_models_and_broker_changes() -> None:
    """A first ASYNC model plans the in-cluster NATS; its limits and the broker settings show in the diff."""
    import copy

    base_raw = raw_catalog()
    after_raw = copy.deepcopy(base_raw)
    after_raw["models"]["q"] = v5_model(endpoint_type="async")
    after_raw["models"]["q"]["async_tasks"] = {"task_timeout_seconds": 900}
    diff = diff_catalogs(build_catalog(copy.deepcopy(base_raw)), build_catalog(copy.deepcopy(after_raw)))
    added = next(d for d in diff.models if d.name == "q")
    assert added.status == "added" and "ASYNC (tasks up to 900 s" in (added.facts or "")
    assert [w.code for w in diff.warnings if w.code.startswith("broker")] == ["broker-added"]
    later = copy.deepcopy(after_raw)
    later["models"]["q"]["async_tasks"]["max_deliveries"] = 5
    later["async"] = {"replicas": 3}
    diff = diff_catalogs(build_catalog(copy.deepcopy(after_raw)), build_catalog(later))
    changed = next(d for d in diff.models if d.name == "q")
    assert any(c.field == "async_tasks.max_deliveries" and c.after == 5 for c in changed.resolved)
    assert any(w.code == "settings-async" for w in diff.warnings)
    assert "sgp-infra:async.replicas" in to_markdown(diff, "stacks/Pulumi.x.yaml", "main")
    gone = diff_catalogs(build_catalog(copy.deepcopy(after_raw)), build_catalog(copy.deepcopy(base_raw)))
    assert any(w.code == "broker-removed" for w in gone.warnings)
