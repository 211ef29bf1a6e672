"""Property tests: mutate valid catalogues into invalid ones.

Whatever the mutation, validation ends in a catalogue or in ``CatalogInvalid``
whose every error names a config path — never another exception.  Mutations
that are certainly invalid (an unknown field, a dropped required field) must be
reported at the path they touched.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog_fixtures import STACKS, raw_catalog
from sgp_infra.catalog import CatalogInvalid, build_catalog, raw_from_stack_doc
from sgp_infra.catalog.errors import config_path

BASES = [raw_catalog()] + [raw_from_stack_doc(yaml.safe_load(Path(p).read_text())) for p in STACKS]

Path_ = tuple[Any, ...]

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=True),
    st.text(max_size=12), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from paths(value, (*prefix, i))


def parent_and_key(raw: dict[str, Any], path: Path_) -> tuple[Any, Any]:
    node: Any = raw
    for part in path[:-1]:
        node = node[part]
    return node, path[-1]


def outcome(raw: dict[str, Any]) -> list[str] | None:
    """Error paths, or None if the mutated catalogue is still valid."""
    try:
        build_catalog(raw)
    except CatalogInvalid as invalid:
        assert invalid.errors, "CatalogInvalid without errors"
        for error in invalid.errors:
            assert error.path.startswith("sgp-infra:") and error.message
        return [e.path for e in invalid.errors]
    return None


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], Path_, str]:
    raw = copy.deepcopy(draw(st.sampled_from(BASES)))
    path = draw(st.sampled_from(list(paths(raw))))
    kind = draw(st.sampled_from(["replace", "delete", "unknown"]))
    parent, key = parent_and_key(raw, path)
    if kind == "replace":
        parent[key] = draw(JUNK)
    elif kind == "delete":
        del parent[key]
    else:
        target = parent[key]
        if not isinstance(target, dict):
            kind = "replace"
            parent[key] = draw(JUNK)
        else:
            target["zz_unknown_field"] = draw(JUNK)
            path = (*path, "zz_unknown_field")
    return raw, path, kind


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_any_mutation_gives_a_catalogue_or_path_named_errors(case: tuple[dict[str, Any], Path_, str]) -> None:
    raw, _path, _kind = case
    outcome(raw)


def _is_free_form(path: Path_) -> bool:
    """Maps whose keys are the user's (env, params, labels, schemas) accept any key."""
    free = {"env", "env_vars", "labels", "model_creation_parameters", "request_schema", "response_schema",
            "model_metadata", "templates", "models", "modelGroups", "gpuProfile", "gpuQuota"}
    return any(isinstance(p, str) and p in free for p in path[:-1])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_unknown_fields_are_reported_at_their_path(case: tuple[dict[str, Any], Path_, str]) -> None:
    raw, path, kind = case
    if kind != "unknown" or _is_free_form(path) or len(path) < 2:
        return
    errors = outcome(raw)
    assert errors is not None and config_path(*path) in errors


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(BASES), st.data())
def test_dropping_a_required_field_is_reported(base: dict[str, Any], data: st.DataObject) -> None:
    raw = copy.deepcopy(base)
    required = [("templates", t, f) for t in raw.get("templates", {})
                for f in ("endpoint_type", "model_type", "vendor_configuration")]
    required += [("models", m, "model_type") for m, e in raw.get("models", {}).items()
                 if "vendor_configuration" not in e]
    required += [("models", m, "vendor_configuration", "model_image", f) for m, e in raw.get("models", {}).items()
                 if "vendor_configuration" in e for f in ("registry", "repository", "tag", "command")]
    path = data.draw(st.sampled_from(required))
    parent, key = parent_and_key(raw, path)
    del parent[key]
    errors = outcome(raw)
    assert errors is not None and config_path(*path) in errors
