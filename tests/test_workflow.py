""".github/workflows/preview.yml: valid against a strict workflow schema, and wired as documented.

actionlint is not installable from PyPI here (its wheel-less package downloads
the binary while building), so validity is checked with a JSON schema shipped
in ``tests/schemas`` plus the cross-references a schema cannot express (job
needs, step ids, outputs, matrix use, shell syntax).  If an ``actionlint``
binary is on PATH, it is run too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "preview.yml"
SCHEMA = ROOT / "tests" / "schemas" / "github-workflow.schema.json"
PATHS = ["stacks/**", "sgp_infra/**", "__main__.py"]
EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def load_workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the bare key `on` as the boolean True; GitHub reads it as "on".
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load_workflow()


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def steps_using(workflow: dict[str, Any], job: str, action: str) -> list[dict[str, Any]]:
    return [s for s in workflow["jobs"][job]["steps"] if str(s.get("uses", "")).startswith(action + "@")]


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft7Validator.check_schema(json.loads(SCHEMA.read_text()))


def test_workflow_matches_the_schema(workflow: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(workflow)]
    assert errors == []


def test_schema_rejects_typical_mistakes(workflow: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    bad = json.loads(json.dumps(workflow))
    bad["jobs"]["test"]["runs_on"] = bad["jobs"]["test"].pop("runs-on")
    assert not validator.is_valid(bad)
    bad = json.loads(json.dumps(workflow))
    bad["jobs"]["test"]["steps"][-1]["with"] = {"x": 1}  # `with` on a run step
    assert not validator.is_valid(bad)
    bad = json.loads(json.dumps(workflow))
    bad["jobs"]["test"]["steps"][0]["uses"] = "actions/checkout"  # unpinned
    assert not validator.is_valid(bad)


def test_triggers(workflow: dict[str, Any]) -> None:
    on = workflow["on"]
    assert on["pull_request"]["paths"] == PATHS
    assert on["push"]["branches"] == ["main"] and on["push"]["paths"] == PATHS


def test_needs_name_existing_jobs_without_cycles(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    graph = {name: ([job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", []))
             for name, job in jobs.items()}
    for name, needs in graph.items():
        assert set(needs) <= set(jobs), f"{name} needs an unknown job"
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"cycle: {path + (name,)}"
        for dep in graph[name]:
            visit(dep, path + (name,))
        done.add(name)

    for name in jobs:
        visit(name, ())


def test_expression_references_resolve(workflow: dict[str, Any]) -> None:
    """``steps.X``, ``needs.X.outputs.Y`` and ``matrix.X`` point at things that exist."""
    jobs = workflow["jobs"]
    for name, job in jobs.items():
        needs = [job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", [])
        step_ids = [s["id"] for s in job["steps"] if "id" in s]
        assert len(step_ids) == len(set(step_ids)), f"{name}: duplicate step ids"
        matrix = job.get("strategy", {}).get("matrix", {})
        for text in strings(job):
            assert text.count("${{") == text.count("}}"), f"{name}: unbalanced expression in {text!r}"
            for expr in EXPR.findall(text):
                for step in re.findall(r"\bsteps\.([A-Za-z0-9_-]+)", expr):
                    assert step in step_ids, f"{name}: no step with id {step}"
                for dep, output in re.findall(r"\bneeds\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)", expr):
                    assert dep in needs, f"{name}: uses needs.{dep} without needing it"
                    assert output in jobs[dep].get("outputs", {}), f"{name}: {dep} has no output {output}"
                for key in re.findall(r"\bmatrix\.([A-Za-z0-9_-]+)", expr):
                    assert key in matrix, f"{name}: matrix.{key} is not a matrix key"


def test_run_scripts_are_valid_bash_and_take_no_untrusted_input(workflow: dict[str, Any]) -> None:
    bash = shutil.which("bash")
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            script = step.get("run")
            if script is None:
                continue
            # PR titles, branch names and bodies are attacker-controlled: pass them through env, never inline
            assert "github.event" not in script and "github.head_ref" not in script, f"{name}: {script!r}"
            if bash:
                stub = EXPR.sub("X", script)
                proc = subprocess.run([bash, "-n"], input=stub, capture_output=True, text=True)
                assert proc.returncode == 0, f"{name}: {proc.stderr}"


def test_pull_requests_get_tests_diff_comment_and_preview(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    assert any(s.get("run") == "make test" for s in jobs["test"]["steps"])
    preview = jobs["preview"]
    assert "pull_request" in preview["if"] and set(preview["needs"]) == {"test", "stacks"}
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.all) }}"
    assert preview["permissions"]["pull-requests"] == "write"
    (checkout,) = steps_using(workflow, "preview", "actions/checkout")
    assert checkout["with"]["fetch-depth"] == 0, "the diff needs the base branch's history"
    diff_step = next(s for s in preview["steps"] if s.get("id") == "diff")
    assert "-m sgp_infra diff --stack \"$STACK\" --base \"origin/$BASE_REF\"" in diff_step["run"]
    assert diff_step["env"]["BASE_REF"] == "${{ github.base_ref }}"
    (comment,) = steps_using(workflow, "preview", "actions/github-script")
    assert "catalogue-diff.md" in comment["with"]["script"]
    (pulumi,) = steps_using(workflow, "preview", "pulumi/actions")
    assert pulumi["with"]["command"] == "preview" and pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["stack-name"] == "${{ matrix.stack }}"
    assert pulumi["with"]["policyPacks"] == "policy" and (ROOT / "policy" / "PulumiPolicy.yaml").is_file()
    order = [preview["steps"].index(s) for s in (diff_step, comment, pulumi)]
    assert order == sorted(order), "diff, then the comment, then pulumi preview"


def test_main_deploys_only_auto_deploy_stacks(workflow: dict[str, Any]) -> None:
    deploy = workflow["jobs"]["deploy"]
    assert "push" in deploy["if"] and "refs/heads/main" in deploy["if"]
    assert deploy["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.auto) }}"
    (pulumi,) = steps_using(workflow, "deploy", "pulumi/actions")
    assert pulumi["with"]["command"] == "up"
    listing = "\n".join(s.get("run", "") for s in workflow["jobs"]["stacks"]["steps"])
    assert "sgp_infra stacks --auto-deploy --format json" in listing


def test_the_listing_commands_the_workflow_runs_work() -> None:
    def stacks(*args: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-m", "sgp_infra", "stacks", *args, "--format", "json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    assert stacks() == sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
    auto = stacks("--auto-deploy")
    assert set(auto) <= set(stacks())


def test_auto_deploy_flag_selects_stacks(tmp_path: Path) -> None:
    from catalog_fixtures import raw_catalog

    for name, flag in (("a", True), ("b", False), ("c", "true")):
        raw = raw_catalog() | {"autoDeploy": flag}
        (tmp_path / f"Pulumi.{name}.yaml").write_text(
            yaml.safe_dump({"config": {f"sgp-infra:{k}": v for k, v in raw.items()}}))
    proc = subprocess.run([sys.executable, "-m", "sgp_infra", "stacks", "--dir", str(tmp_path), "--auto-deploy",
                           "--format", "json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["a", "c"]
    text = subprocess.run([sys.executable, "-m", "sgp_infra", "stacks", "--dir", str(tmp_path), "--auto-deploy"],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and text.stdout == "a\nc\n"


def test_no_auto_deploy_stack_prints_nothing_not_an_empty_line(tmp_path: Path) -> None:
    from catalog_fixtures import raw_catalog

    (tmp_path / "Pulumi.b.yaml").write_text(
        yaml.safe_dump({"config": {f"sgp-infra:{k}": v for k, v in raw_catalog().items()}}))
    proc = subprocess.run([sys.executable, "-m", "sgp_infra", "stacks", "--dir", str(tmp_path), "--auto-deploy"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == ""


@pytest.mark.skipif(shutil.which("actionlint") is None, reason="actionlint is not on PATH")
def test_actionlint() -> None:  # pragma: no cover - only where actionlint is installed
    proc = subprocess.run(["actionlint", "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
