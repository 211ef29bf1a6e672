"""Generated files stay current, and the stack schema says what the validator says.

The stack JSON Schema, the catalogue field reference and the README's command
synopsis are generated from the code (``python tools/generate_docs.py``); each
test here fails while a committed copy is stale, naming that command.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from catalog_fixtures import ROOT
from sgp_infra.catalog import CatalogInvalid, SourceError, build_catalog, raw_from_stack_doc
from sgp_infra.catalog.schema import REFERENCE_PATH, SCHEMA_PATH, reference_markdown, schema_text, stack_schema
from sgp_infra.cli import command_parsers
from sgp_infra.cli.synopsis import README_MARKER, readme_with_synopsis, usage_line

REGENERATE = "stale: regenerate with `python tools/generate_docs.py` and commit the result"
EXAMPLE_STACKS = sorted([*ROOT.glob("stacks/Pulumi.*.yaml"), *ROOT.glob("examples/**/Pulumi.*.yaml"),
                         *ROOT.glob("examples/**/catalog.yaml")])


def test_committed_schema_is_current() -> None:
    assert (ROOT / SCHEMA_PATH).read_text(encoding="utf-8") == schema_text(), f"{SCHEMA_PATH} is {REGENERATE}"


def test_committed_field_reference_is_current() -> None:
    assert (ROOT / REFERENCE_PATH).read_text(encoding="utf-8") == reference_markdown(), \
        f"{REFERENCE_PATH} is {REGENERATE}"


def test_readme_synopsis_is_current() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert README_MARKER in readme
    assert readme == readme_with_synopsis(readme), f"README.md's command synopsis is {REGENERATE}"


def test_synopsis_lists_every_command_and_flag() -> None:
    """Every option a command's --help lists is in the README's synopsis."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index(README_MARKER):].split("```")[1]
    for name, parser in command_parsers().items():
        assert f"python -m sgp_infra {name} " in block
        for line in parser.format_help().splitlines():
            head = line[2:].split("  ")[0] if line.startswith("  -") else ""
            for flag in re.findall(r"--[\w-]+", head):
                if flag != "--help":
                    assert flag in block, (name, flag)
    expected = "python -m sgp_infra validate [--stack NAME | --config-file PATH]"
    assert usage_line(command_parsers()["validate"]) == expected


def test_generate_docs_check_passes() -> None:
    proc = subprocess.run([sys.executable, "tools/generate_docs.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_command_prints_the_schema() -> None:
    proc = subprocess.run([sys.executable, "-m", "sgp_infra", "schema"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout) == stack_schema()


# --- the schema against the validator -------------------------------------------------------

VALIDATOR = jsonschema.Draft202012Validator(stack_schema())


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(stack_schema())
    assert stack_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", EXAMPLE_STACKS, ids=[str(p.relative_to(ROOT)) for p in EXAMPLE_STACKS])
def test_example_stacks_name_the_schema_and_pass_it(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    relative = Path(*[".."] * (len(path.relative_to(ROOT).parts) - 1), SCHEMA_PATH).as_posix()
    assert first == f"# yaml-language-server: $schema={relative}"
    assert (path.parent / relative).resolve() == (ROOT / SCHEMA_PATH).resolve()
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [e.message for e in VALIDATOR.iter_errors(doc)]
    assert errors == []


def _stack(raw: dict[str, Any]) -> dict[str, Any]:
    return {"config": {f"sgp-infra:{k}": v for k, v in raw.items()}}


def _prod() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("mutate, where", [
    (lambda c: c["sgp-infra:templates"]["vllm-chat"].update(zz_typo=1), "templates"),
    (lambda c: c["sgp-infra:templates"]["vllm-chat"]["vendor_configuration"]["bundle_config"].update(imag="x"),
     "bundle_config"),
    (lambda c: c["sgp-infra:models"]["llama-3-8b-instruct"].update(min_worker=1), "v4 model"),
    (lambda c: c["sgp-infra:models"]["qwen-72b-chat"]["vendor_configuration"]["model_infra"].update(gpu=1),
     "v5 model_infra"),
    (lambda c: c["sgp-infra:models"]["qwen-72b-chat"].update(description="v5 takes none"), "v5 description"),
    (lambda c: c["sgp-infra:modelGroups"]["llama"].update(members=[]), "group"),
    (lambda c: c.update({"sgp-infra:acountId": "x"}), "unknown sgp-infra key"),
    (lambda c: c.update({"sgp-infra:apiKeys": {"k": ["a"]}}), "apiKeys in plain text"),
    (lambda c: c.pop("sgp-infra:accountId"), "missing accountId"),
    (lambda c: c["sgp-infra:templates"]["vllm-chat"].update(endpoint_protocol="vllm"), "enum casing"),
])
def test_schema_rejects_what_the_validator_rejects(mutate: Any, where: str) -> None:
    doc = _prod()
    mutate(doc["config"])
    assert list(VALIDATOR.iter_errors(doc)), where
    if where != "apiKeys in plain text":  # the validator never reads the secret
        with pytest.raises((CatalogInvalid, SourceError)):
            build_catalog(raw_from_stack_doc(doc))


def test_schema_accepts_other_namespaces_secrets_and_pulumi_strings() -> None:
    doc = _prod()
    doc["config"].update({
        "kubernetes:context": "prod", "pulumi:tags": {"team": "ml"}, "ml-platform:renderDir": "out",
        "sgp-infra:apiKeys": {"secure": "v1:abc=="},
        "sgp-infra:autoDeploy": "true", "sgp-infra:createPriorityClasses": "false",
    })
    assert [e.message for e in VALIDATOR.iter_errors(doc)] == []
    build_catalog(raw_from_stack_doc(doc))  # the validator agrees
    assert [e.message for e in VALIDATOR.iter_errors({"config": {"ml-platform:renderDir": "x"}})] == []


def test_schema_carries_descriptions_and_defaults() -> None:
    schema = stack_schema()
    bundle = schema["$defs"]["ModelBundleConfiguration"]["properties"]
    assert bundle["predict_route"]["default"] == "/predict" and bundle["predict_route"]["description"]
    infra = schema["$defs"]["CreateModelEndpointConfig"]["properties"]
    assert infra["per_worker"]["default"] == 10 and "concurrent requests" in infra["per_worker"]["description"]
    models = schema["properties"]["config"]["properties"]["sgp-infra:models"]["additionalProperties"]
    assert models == {"anyOf": [{"$ref": "#/$defs/ModelV4"}, {"$ref": "#/$defs/ModelV5"}]}
    for name in ("InferenceOptions", "AsyncTaskOptions"):
        assert all(p.get("description") for p in schema["$defs"][name]["properties"].values())
    undocumented = [f"{d}.{f}" for d, body in schema["$defs"].items() for f, p in body.get("properties", {}).items()
                    if not p.get("description")]
    assert undocumented == []


def test_reference_lists_every_field_and_who_takes_it() -> None:
    text = reference_markdown()
    schema = stack_schema()
    for name, body in schema["$defs"].items():
        assert f"\n## {name}\n" in text
        for field in body.get("properties", {}):
            assert f"| `{field}` |" in text, (name, field)
    assert "| `description` | — | yes | — | yes |" in text  # v4 models and groups take it; v5 rejects it
    assert "| `vendor_configuration` | yes | — | yes | — |" in text


def test_a_model_entry_is_v4_or_v5_not_a_mix() -> None:
    doc = _prod()
    mixed = copy.deepcopy(doc["config"]["sgp-infra:models"]["qwen-72b-chat"])
    mixed["model_template_id"] = "vllm-chat"
    doc["config"]["sgp-infra:models"]["mixed"] = mixed
    assert list(VALIDATOR.iter_errors(doc))
