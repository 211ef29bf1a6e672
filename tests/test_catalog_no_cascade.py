"""Errors never cascade: one entry's problems never hide or invent another's.

The property: for two independent mutations in different entries, the error
set of both together is the union of each one's errors.  "Independent" means
neither mutation touches what the other entry reads of it: a template's
identity and what its models use (``model_type``, the creation-parameter
schema, the bundle's command/env strings, the worker bounds), a model's
references (``model_template_id``, ``model_group_id``) and identity, a group's
``models`` list and identity.  Everything else in an entry is fair game,
including mutations that make it invalid as a whole, so an invalid template
must not hide its models' own problems.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog_fixtures import STACKS, raw_catalog, template, v4_model
from sgp_infra.catalog import CatalogInvalid, build_catalog, entity_id, raw_from_stack_doc
from sgp_infra.catalog.errors import ConfigError, config_path

BASES = [raw_catalog()] + [raw_from_stack_doc(yaml.safe_load(Path(p).read_text())) for p in STACKS]
Path_ = tuple[Any, ...]

#: Paths (below an entry) that other entries read; a mutation here is not independent of them.
SHARED: dict[str, list[Path_]] = {
    "templates": [("id",), ("account_id",), ("model_type",), ("model_creation_parameters_schema",),
                  ("vendor_configuration",), ("vendor_configuration", "bundle_config"),
                  ("vendor_configuration", "bundle_config", "command"),
                  ("vendor_configuration", "bundle_config", "streaming_command"),
                  ("vendor_configuration", "bundle_config", "env"),
                  ("vendor_configuration", "endpoint_config"),
                  ("vendor_configuration", "endpoint_config", "min_workers"),
                  ("vendor_configuration", "endpoint_config", "max_workers")],
    "models": [("id",), ("account_id",), ("model_template_id",), ("model_group_id",)],
    "modelGroups": [("id",), ("account_id",), ("models",)],
}


def shared(key: str, below: Path_) -> bool:
    """Whether ``below`` (a path inside an entry of ``key``) is, or is inside, a shared field."""
    return any(below[:len(p)] == p for p in SHARED[key]) or (key == "templates" and not below)


def entry_paths(raw: dict[str, Any]) -> list[tuple[str, str, Path_]]:
    """``(key, entry name, path below the entry)`` of every node inside an entry, the entry itself included."""
    out: list[tuple[str, str, Path_]] = []

    def walk(key: str, name: str, node: Any, below: Path_) -> None:
        if not shared(key, below):
            out.append((key, name, below))
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for child_key, child in children:
            walk(key, name, child, (*below, child_key))

    for key in ("templates", "models", "modelGroups"):
        for name, entry in (raw.get(key) or {}).items():
            walk(key, name, entry, ())
    return out


#: Junk a mutation writes.  Strings are drawn with a prefix unique to each mutation, so
#: two mutations never write the same text (which would make them depend on each other,
#: e.g. two equal ids).
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=False),
                    st.lists(st.integers(), max_size=2), st.dictionaries(st.sampled_from("ab"), st.integers(),
                                                                         max_size=1))


@st.composite
def mutation(draw: st.DrawFn, raw: dict[str, Any], tag: str,
             exclude: Optional[tuple[str, str]] = None) -> Optional[tuple[str, str, Path_, str, Any]]:
    """``(key, name, path, op, value)``, an edit inside one entry (not ``exclude``), or None."""
    choices = [c for c in entry_paths(raw) if (c[0], c[1]) != exclude]
    if not choices:
        return None
    key, name, below = draw(st.sampled_from(choices))
    op = draw(st.sampled_from(["replace", "delete", "unknown", "text"]))
    value = draw(SCALARS) if op == "replace" else f"{tag}{draw(st.text('xyz-.9 ', max_size=6))}"
    return key, name, below, op, value


def apply(raw: dict[str, Any], edit: tuple[str, str, Path_, str, Any]) -> None:
    key, name, below, op, value = edit
    parent: Any = raw[key]
    path: Path_ = (name, *below)
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    target = parent[last]
    if op == "delete" and below:
        del parent[last]
    elif op == "unknown" and isinstance(target, dict):
        target[f"zz_{value}"] = 1
    elif op == "text":
        parent[last] = value
    else:
        parent[last] = value if op == "replace" else 0


def errors(raw: dict[str, Any]) -> set[ConfigError]:
    try:
        build_catalog(copy.deepcopy(raw))
    except CatalogInvalid as invalid:
        return set(invalid.errors)
    return set()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_two_independent_mutations_give_the_union_of_their_errors(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(BASES))
    first = data.draw(mutation(base, "a"))
    if first is None:
        return
    second = data.draw(mutation(base, "b", exclude=first[:2]))
    if second is None:
        return
    only_first, only_second, both = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    apply(only_first, first)
    apply(only_second, second)
    apply(both, first)
    apply(both, second)
    union = errors(only_first) | errors(only_second)
    together = errors(both)
    assert together == union, (f"missing: {sorted(union - together)}\nextra: {sorted(together - union)}")


# --- the cases the property is about, spelled out --------------------------------------------


def build_errors(raw: dict[str, Any]) -> list[str]:
    return [str(e) for e in sorted(errors(raw))]


def test_models_of_an_invalid_template_report_their_own_problems_in_the_same_run() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["vendor_configuration"]["bundle_config"]["tag"] = 1.5  # invalid: not a string
    raw["templates"]["tpl"]["endpoint_protocol"] = "vllm"  # invalid: the API spells it VLLM
    raw["models"]["m4"] = v4_model(model_type="EMBEDDING", model_creation_parameters={"weight": "x"},
                                   min_workers=5)
    got = build_errors(raw)
    assert "sgp-infra:templates.tpl.vendor_configuration.bundle_config.tag: Input should be a valid string " \
           "(quote it in YAML)" in got
    assert any(e.startswith("sgp-infra:templates.tpl.endpoint_protocol:") for e in got)
    assert "sgp-infra:models.m4.model_type: is EMBEDDING but template 'tpl' serves COMPLETION" in got
    assert "sgp-infra:models.m4.model_creation_parameters.weights: required by template 'tpl'" in got
    assert ("sgp-infra:models.m4.model_creation_parameters.weight: template 'tpl' declares no such parameter "
            "(it declares: weights)") in got
    assert "sgp-infra:models.m4.min_workers: is 5, above max_workers 2 (from template 'tpl')" in got
    assert not any("no template" in e for e in got)


def test_a_template_that_is_not_a_map_is_still_known() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"] = "oops"
    got = build_errors(raw)
    assert got == ["sgp-infra:templates.tpl: must be a map of fields, got str"]


def test_a_reference_by_id_to_an_invalid_template_is_resolved() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"] = template(id="tpl-1", zz_unknown=1)
    raw["models"]["m4"] = v4_model(model_template_id="tpl-1", model_creation_parameters={})
    got = build_errors(raw)
    assert "sgp-infra:models.m4.model_creation_parameters.weights: required by template 'tpl'" in got
    assert not any("no template" in e for e in got)
    # by its derived id too
    raw["templates"]["tpl"] = template(zz_unknown=1)
    raw["models"]["m4"] = v4_model(model_template_id=entity_id("acct", "model_template", "tpl"))
    (only,) = build_errors(raw)
    assert only.startswith("sgp-infra:templates.tpl.zz_unknown: unknown field")


def test_an_unreadable_id_is_not_reported_against_its_referrers() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"] = template(id=7)
    raw["models"]["m4"] = v4_model(model_template_id="7")
    got = build_errors(raw)
    assert got == ["sgp-infra:templates.tpl.id: Input should be a valid string (quote it in YAML)"]
    raw["models"]["m4"] = v4_model(model_template_id="8")
    assert "sgp-infra:models.m4.model_template_id: no template named or with id '8' (templates: tpl)" \
        in build_errors(raw)


def test_a_partly_readable_parameter_schema_still_checks_what_it_declares() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["model_creation_parameters_schema"]["parameters"].append({"name": "extra"})
    raw["models"]["m4"] = v4_model(model_creation_parameters={"other": 1})
    got = build_errors(raw)
    # 'weights' is declared and missing; 'other' may be the unreadable declaration, so it is not reported
    assert "sgp-infra:models.m4.model_creation_parameters.weights: required by template 'tpl'" in got
    assert not any("declares no such parameter" in e for e in got)


def test_invalid_models_still_take_part_in_group_membership() -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["model_group_id"] = "other"
    raw["models"]["m4"]["zz_unknown"] = 1
    raw["modelGroups"]["other"] = {"description": "x"}
    got = build_errors(raw)
    assert any(e.startswith("sgp-infra:models.m4.model_group_id: model 'm4' is already in group 'g'") for e in got)


@pytest.mark.parametrize("junk", [5, "x y", None])
def test_invalid_models_keep_their_object_name_checks(junk: Any) -> None:
    raw = raw_catalog()
    raw["models"]["M4"] = v4_model(model_type=junk)
    got = build_errors(raw)
    assert any(e.startswith("sgp-infra:models.M4: maps to Kubernetes object name 'm4'") for e in got)
    assert config_path("models", "M4", "model_type") in {e.split(": ", 1)[0] for e in got}
