"""One test per catalogue validation rule: each names its config path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from catalog_fixtures import raw_catalog, template, v5_model
from sgp_infra.catalog import CatalogInvalid, build_catalog, entity_id


def errors_of(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(CatalogInvalid) as info:
        build_catalog(raw)
    return {e.path: e.message for e in info.value.errors}


def test_valid_catalogue_resolves_template_and_parameters() -> None:
    catalog = build_catalog(raw_catalog())
    m4 = catalog.models["m4"]
    assert m4.image == "ghcr.io/acme/server:1.0"
    assert m4.command == ("serve", "--weights", "s3://w/m")
    assert m4.streaming_command == ("serve", "--stream", "--weights", "s3://w/m")
    assert m4.env == {"MODEL_NAME": "s3://w/m", "STATIC": "yes"}
    assert (m4.gpus, m4.gpu_type, m4.min_workers, m4.max_workers) == (1, "nvidia-tesla-t4", 1, 2)
    assert m4.group == "g" and catalog.groups["g"].members == ("m4",)
    m5 = catalog.models["m5"]
    assert m5.image == "ghcr.io/acme/reranker:1.2" and m5.endpoint_type == "SYNC" and m5.api_version == "v5"
    # template defaults from seed 002
    assert (m4.readiness_initial_delay_seconds, m4.healthcheck_route, m4.predict_route) == (120, "/readyz", "/predict")
    assert (m4.cpus, m4.memory, m4.storage, m4.per_worker) == (3, "8Gi", "16Gi", 10)
    assert catalog.gpu_totals() == {"nvidia-ampere-a10": (0, 2), "nvidia-tesla-t4": (1, 2)}


# --- unknown fields and wrong types -------------------------------------------

def test_unknown_field_is_named_with_a_suggestion() -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["min_wrokers"] = 1
    errors = errors_of(raw)
    assert "did you mean 'min_workers'" in errors["sgp-infra:models.m4.min_wrokers"]


def test_unknown_nested_field() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["vendor_configuration"]["bundle_config"]["imagee"] = "x"
    errors = errors_of(raw)
    assert "unknown field" in errors["sgp-infra:templates.tpl.vendor_configuration.bundle_config.imagee"]


def test_unknown_stack_key() -> None:
    raw = raw_catalog()
    raw["modelgroups"] = {}
    assert "did you mean 'modelGroups'" in errors_of(raw)["sgp-infra:modelgroups"]


def test_wrong_type_and_enum_casing() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["endpoint_type"] = "sync"  # v4 spells it SYNC
    raw["models"]["m5"]["vendor_configuration"]["model_infra"]["endpoint_type"] = "SYNC"  # v5 spells it sync
    raw["models"]["m4"]["description"] = 5
    errors = errors_of(raw)
    assert "'SYNC'" in errors["sgp-infra:templates.tpl.endpoint_type"]
    assert "'sync'" in errors["sgp-infra:models.m5.vendor_configuration.model_infra.endpoint_type"]
    assert "valid string" in errors["sgp-infra:models.m4.description"]


def test_a_wrong_enum_value_says_what_to_write_instead() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["endpoint_type"] = "sync"
    raw["models"]["m5"]["vendor_configuration"]["model_infra"]["endpoint_type"] = "SYNC"
    raw["models"]["m4"]["model_type"] = "COMPLETIONS"
    raw["templates"]["tpl"]["endpoint_protocol"] = "GRPC"
    errors = errors_of(raw)
    assert errors["sgp-infra:templates.tpl.endpoint_type"].endswith(
        "(got 'sync'; the casing matters: write 'SYNC')")
    assert errors["sgp-infra:models.m5.vendor_configuration.model_infra.endpoint_type"].endswith(
        "(got 'SYNC'; the casing matters: write 'sync')")
    assert errors["sgp-infra:models.m4.model_type"].endswith("(got 'COMPLETIONS'; did you mean 'COMPLETION'?)")
    assert errors["sgp-infra:templates.tpl.endpoint_protocol"].endswith("(got 'GRPC')")


def test_a_map_or_list_of_the_wrong_shape_is_named_in_yaml_words() -> None:
    raw = raw_catalog()
    raw["api"] = 5
    raw["templates"]["tpl"]["vendor_configuration"]["endpoint_config"] = ["cpus", 1]
    raw["modelGroups"]["g"]["models"] = "m4"
    errors = errors_of(raw)
    assert errors["sgp-infra:api"] == "must be a map of fields, got a number (5)"
    assert errors["sgp-infra:templates.tpl.vendor_configuration.endpoint_config"] == \
        "must be a map of fields, got a list"
    assert errors["sgp-infra:modelGroups.g.models"] == "must be a list, got a string 'm4'"


def test_unquoted_numeric_tag_gets_a_yaml_hint() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["vendor_configuration"]["bundle_config"]["tag"] = 1.2
    assert "quote it" in errors_of(raw)["sgp-infra:templates.tpl.vendor_configuration.bundle_config.tag"]


def test_missing_required_fields() -> None:
    raw = raw_catalog()
    del raw["accountId"]
    del raw["templates"]["tpl"]["model_type"]
    errors = errors_of(raw)
    assert "pulumi config set sgp-infra:accountId" in errors["sgp-infra:accountId"]
    assert errors["sgp-infra:templates.tpl.model_type"] == "is required"


def test_name_must_equal_key() -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["name"] = "other"
    assert "must match" in errors_of(raw)["sgp-infra:models.m4.name"]
    raw = raw_catalog()
    raw["models"]["m4"]["name"] = "m4"
    assert build_catalog(raw).models["m4"].name == "m4"


def test_entries_must_be_maps() -> None:
    raw = raw_catalog()
    raw["models"] = ["m4"]
    raw["templates"]["tpl2"] = "nope"
    errors = errors_of(raw)
    assert "map of entries" in errors["sgp-infra:models"]
    assert "map of fields" in errors["sgp-infra:templates.tpl2"]


# --- creation parameters --------------------------------------------------------

def test_required_creation_parameter() -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["model_creation_parameters"] = {}
    errors = errors_of(raw)
    assert errors["sgp-infra:models.m4.model_creation_parameters.weights"] == "required by template 'tpl'"


@pytest.mark.parametrize(
    ("ptype", "bad", "good"),
    [("str", 3, "x"), ("int", "3", 3), ("int", True, 0), ("float", "1.5", 1), ("bool", 1, False)],
)
def test_creation_parameter_types(ptype: str, bad: Any, good: Any) -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["model_creation_parameters_schema"]["parameters"].append(
        {"name": "p", "type": ptype, "description": "d", "required": False})
    raw["models"]["m4"]["model_creation_parameters"]["p"] = bad
    assert f"expected {ptype}" in errors_of(raw)["sgp-infra:models.m4.model_creation_parameters.p"]
    raw["models"]["m4"]["model_creation_parameters"]["p"] = good
    build_catalog(raw)


def test_unknown_creation_parameter() -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["model_creation_parameters"]["wieghts"] = "x"
    message = errors_of(raw)["sgp-infra:models.m4.model_creation_parameters.wieghts"]
    assert "declares no such parameter" in message and "weights" in message


def test_duplicate_parameter_declaration() -> None:
    raw = raw_catalog()
    params = raw["templates"]["tpl"]["model_creation_parameters_schema"]["parameters"]
    params.append(dict(params[0]))
    assert "declared twice" in errors_of(raw)[
        "sgp-infra:templates.tpl.model_creation_parameters_schema.parameters[1].name"]


# --- parameter injection -----------------------------------------------------------

def test_placeholder_without_declared_parameter_is_a_template_error() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["vendor_configuration"]["bundle_config"]["command"].append("${port}")
    errors = errors_of(raw)
    assert "${port}" in errors["sgp-infra:templates.tpl.vendor_configuration.bundle_config.command[3]"]


def test_placeholder_for_unset_optional_parameter_names_both() -> None:
    raw = raw_catalog()
    params = raw["templates"]["tpl"]["model_creation_parameters_schema"]["parameters"]
    params.append({"name": "revision", "type": "str", "description": "d", "required": False})
    raw["templates"]["tpl"]["vendor_configuration"]["bundle_config"]["env"]["REV"] = "${revision}"
    message = errors_of(raw)["sgp-infra:models.m4.model_creation_parameters"]
    assert "${revision}" in message and "'revision'" in message and "env.REV" in message


def test_injection_formats_values_and_keeps_escapes() -> None:
    raw = raw_catalog()
    params = raw["templates"]["tpl"]["model_creation_parameters_schema"]["parameters"]
    params += [{"name": "n", "type": "int", "description": "d", "required": True},
               {"name": "flag", "type": "bool", "description": "d", "required": True}]
    raw["templates"]["tpl"]["vendor_configuration"]["bundle_config"]["command"] = [
        "serve", "--n=${n}", "--flag=${flag}", "$${literal}", "${weights}${weights}"]
    raw["models"]["m4"]["model_creation_parameters"].update({"n": 4, "flag": True})
    model = build_catalog(raw).models["m4"]
    assert model.command == ("serve", "--n=4", "--flag=true", "${literal}", "s3://w/ms3://w/m")


# --- references -------------------------------------------------------------------

def test_template_by_name_or_id() -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["model_template_id"] = entity_id("acct", "model_template", "tpl")
    assert build_catalog(raw).models["m4"].template.name == "tpl"
    raw["models"]["m4"]["model_template_id"] = "missing"
    assert "no template named or with id 'missing'" in errors_of(raw)["sgp-infra:models.m4.model_template_id"]


def test_v4_model_needs_a_template() -> None:
    raw = raw_catalog()
    del raw["models"]["m4"]["model_template_id"]
    assert "is required" in errors_of(raw)["sgp-infra:models.m4.model_template_id"]


def test_group_members_and_model_group_id() -> None:
    raw = raw_catalog()
    raw["modelGroups"]["g"]["models"].append("ghost")
    raw["models"]["m5"]["model_group_id"] = "nogroup"
    errors = errors_of(raw)
    assert "no model named or with id 'ghost'" in errors["sgp-infra:modelGroups.g.models[1]"]
    # v5 entries have no model_group_id field: it is an unknown field there
    assert "unknown field" in errors["sgp-infra:models.m5.model_group_id"]


def test_group_by_id_and_member_by_id() -> None:
    raw = raw_catalog()
    raw["modelGroups"]["g"]["models"] = [entity_id("acct", "model", "m5")]
    raw["models"]["m4"]["model_group_id"] = entity_id("acct", "model_group", "g")
    catalog = build_catalog(raw)
    assert set(catalog.groups["g"].members) == {"m4", "m5"}


def test_model_in_two_groups_is_an_error() -> None:
    raw = raw_catalog()
    raw["modelGroups"]["h"] = {"models": ["m4"]}
    errors = errors_of(raw)
    assert "at most one group" in errors["sgp-infra:modelGroups.h.models[0]"]


def test_unknown_model_group_id() -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["model_group_id"] = "nope"
    assert "no model group" in errors_of(raw)["sgp-infra:models.m4.model_group_id"]


def test_references_to_a_broken_entry_are_not_reported_twice() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["endpoint_type"] = "nonsense"
    errors = errors_of(raw)
    assert list(errors) == ["sgp-infra:templates.tpl.endpoint_type"]


# --- GPUs, quantities, workers ----------------------------------------------------

def test_gpus_if_and_only_if_gpu_type() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["vendor_configuration"]["endpoint_config"] = {"gpus": 2}
    raw["models"]["m5"] = v5_model(gpus=0)
    errors = errors_of(raw)
    assert "required when gpus is 2" in errors["sgp-infra:templates.tpl.vendor_configuration.endpoint_config.gpu_type"]
    assert "gpus >= 1" in errors["sgp-infra:models.m5.vendor_configuration.model_infra.gpus"]


@pytest.mark.parametrize("mig", ["nvidia-hopper-h100-1g20gb", "nvidia-hopper-h100-3g40gb"])
def test_mig_types_take_exactly_one_gpu(mig: str) -> None:
    raw = raw_catalog()
    raw["models"]["m5"] = v5_model(gpus=2, gpu_type=mig)
    assert "exactly one GPU" in errors_of(raw)["sgp-infra:models.m5.vendor_configuration.model_infra.gpus"]
    raw["models"]["m5"] = v5_model(gpus=1, gpu_type=mig)
    build_catalog(raw)


@pytest.mark.parametrize("field", ["memory", "storage", "cpus"])
@pytest.mark.parametrize("bad", ["8 GB", "lots", "-1", "1.5.2Gi"])
def test_quantities(field: str, bad: str) -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["vendor_configuration"]["endpoint_config"][field] = bad
    assert "quantity" in errors_of(raw)[f"sgp-infra:templates.tpl.vendor_configuration.endpoint_config.{field}"]


@pytest.mark.parametrize("good", ["500m", "1.5", "2", "8Gi", "16G", "1e3"])
def test_quantities_accepted(good: str) -> None:
    raw = raw_catalog()
    raw["models"]["m5"] = v5_model(cpus=good, memory=good if good != "500m" else "512Mi")
    build_catalog(raw)


def test_zero_cpus_rejected() -> None:
    raw = raw_catalog()
    raw["models"]["m5"] = v5_model(cpus=0)
    assert "greater than zero" in errors_of(raw)["sgp-infra:models.m5.vendor_configuration.model_infra.cpus"]


def test_min_workers_at_most_max_workers() -> None:
    raw = raw_catalog()
    raw["models"]["m5"] = v5_model(min_workers=3, max_workers=2)
    raw["models"]["m4"]["max_workers"] = 0  # override below the template's min of 1
    errors = errors_of(raw)
    assert "above max_workers 2" in errors["sgp-infra:models.m5.vendor_configuration.model_infra.min_workers"]
    assert "above max_workers 0" in errors["sgp-infra:models.m4.min_workers"]


def test_per_worker_at_least_one() -> None:
    raw = raw_catalog()
    raw["models"]["m5"] = v5_model(per_worker=0)
    assert "greater than or equal to 1" in errors_of(raw)[
        "sgp-infra:models.m5.vendor_configuration.model_infra.per_worker"]


def test_per_model_scaling_overrides() -> None:
    raw = raw_catalog()
    raw["models"]["m4"].update(min_workers=2, max_workers=5, per_worker=3)
    model = build_catalog(raw).models["m4"]
    assert (model.min_workers, model.max_workers, model.per_worker) == (2, 5, 3)


# --- names --------------------------------------------------------------------------

def test_names_map_to_kubernetes_object_names() -> None:
    raw = raw_catalog()
    raw["models"]["Llama-3.1_8B"] = v5_model()
    catalog = build_catalog(raw)
    assert catalog.models["Llama-3.1_8B"].object_name == "llama-3-1-8b"


@pytest.mark.parametrize(("name", "fragment"), [
    ("3b-model", "must start with a letter"),
    ("x" * 51, "at most 50"),
    ("...", "no letters or digits"),
    ("sgp-infra-api", "sgp-infra's own objects"),
])
def test_unusable_names(name: str, fragment: str) -> None:
    raw = raw_catalog()
    raw["models"][name] = v5_model()
    assert fragment in errors_of(raw)[f"sgp-infra:models.{name}" if name != "..." else 'sgp-infra:models["..."]']


def test_two_models_mapping_to_one_object_name() -> None:
    raw = raw_catalog()
    raw["models"]["llama-3.1"] = v5_model()
    raw["models"]["llama-3-1"] = v5_model()
    errors = errors_of(raw)
    assert any("same as sgp-infra:models" in m and "llama-3-1" in m for m in errors.values())


def test_namespace_must_be_a_dns_label() -> None:
    raw = raw_catalog()
    raw["namespace"] = "Models_NS"
    assert "namespace name" in errors_of(raw)["sgp-infra:namespace"]


# --- endpoint types ---------------------------------------------------------------

def test_endpoint_config_endpoint_type_must_agree_with_the_template() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["vendor_configuration"]["endpoint_config"]["endpoint_type"] = "STREAMING"
    message = errors_of(raw)["sgp-infra:templates.tpl.vendor_configuration.endpoint_config.endpoint_type"]
    assert "top-level endpoint_type decides" in message
    raw["templates"]["tpl"]["vendor_configuration"]["endpoint_config"]["endpoint_type"] = "SYNC"
    build_catalog(raw)


def test_batch_is_not_deployable() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["endpoint_type"] = "BATCH"
    message = errors_of(raw)["sgp-infra:templates.tpl.endpoint_type"]
    assert "BATCH endpoints" in message and "not deployable" in message


def test_async_template_and_v5_model_are_deployable() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["endpoint_type"] = "ASYNC"
    raw["models"]["m5"] = v5_model(endpoint_type="async")
    catalog = build_catalog(raw)
    assert catalog.models["m4"].is_async and catalog.models["m5"].is_async


def test_async_model_with_no_workers_is_an_error() -> None:
    raw = raw_catalog()
    raw["models"]["m5"] = v5_model(endpoint_type="async", min_workers=0, max_workers=0)
    message = errors_of(raw)["sgp-infra:models.m5.vendor_configuration.model_infra.max_workers"]
    assert "ASYNC model needs at least one worker" in message


def test_streaming_template() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["endpoint_type"] = "STREAMING"
    model = build_catalog(raw).models["m4"]
    assert model.streaming and model.streaming_predict_route == "/generate_streaming"


# --- ids --------------------------------------------------------------------------

def test_ids_are_stable_and_derived_from_account_kind_and_name() -> None:
    first, second = build_catalog(raw_catalog()), build_catalog(raw_catalog())
    assert first.models["m4"].id == second.models["m4"].id == entity_id("acct", "model", "m4")
    assert entity_id("acct", "model", "m4") != entity_id("other", "model", "m4")
    assert entity_id("acct", "model", "g") != entity_id("acct", "model_group", "g")
    # a known value pins the derivation: changing it would change every id
    assert entity_id("acct", "model", "m4") == "ba7dcf67-0d22-5529-a034-af7585d759fa"


def test_explicit_ids_must_be_unique() -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["id"] = "same"
    raw["models"]["m5"]["id"] = "same"
    assert "already the id of" in str(errors_of(raw))


def test_account_defaults_and_cross_account_template() -> None:
    raw = raw_catalog()
    raw["models"]["m5"]["account_id"] = "other"
    catalog = build_catalog(copy.deepcopy(raw) | {"modelGroups": {}})
    assert catalog.models["m5"].account_id == "other" and catalog.models["m4"].account_id == "acct"
    raw["models"]["m4"]["account_id"] = "other"
    assert "belongs to account 'acct'" in errors_of(raw)["sgp-infra:models.m4.model_template_id"]


def test_model_type_must_match_template() -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["model_type"] = "EMBEDDING"
    assert "serves COMPLETION" in errors_of(raw)["sgp-infra:models.m4.model_type"]


def test_all_errors_reported_together() -> None:
    raw = raw_catalog()
    raw["models"]["m4"]["model_creation_parameters"] = {}
    raw["models"]["m5"] = v5_model(min_workers=5, max_workers=1)
    raw["templates"]["t2"] = template(endpoint_type="BATCH")
    assert len(errors_of(raw)) >= 3


# --- sgp-infra extensions: inference and async_tasks ---------------------------


def test_inference_extension_defaults_by_model_type() -> None:
    catalog = build_catalog(raw_catalog())
    for model in catalog.models.values():
        assert model.inference.cold_start_hold_seconds == 50.0
        assert model.inference.connect_timeout_seconds == 5.0
        if model.model_type.upper() in ("COMPLETION", "CHAT_COMPLETION"):
            assert model.inference.routing == "prefix-affinity"
        else:
            assert model.inference.routing == "least-load"
        expected_read = 60.0 if model.model_type.upper() in ("EMBEDDING", "RERANKING") else 300.0
        assert model.inference.read_timeout_seconds == expected_read
        assert model.async_tasks.max_deliveries == 3


def test_inference_extension_model_overrides_template_field_by_field() -> None:
    raw = raw_catalog()
    tname, template = next(iter(raw["templates"].items()))
    template["inference"] = {"read_timeout_seconds": 30, "routing": "service", "pod_skip_seconds": 12}
    template["async_tasks"] = {"max_deliveries": 5, "task_timeout_seconds": 120}
    mname = next(n for n, m in raw["models"].items() if m.get("model_template_id") == tname)
    raw["models"][mname]["inference"] = {"routing": "least-load", "cold_start_hold_seconds": 10}
    raw["models"][mname]["async_tasks"] = {"task_timeout_seconds": 60}
    model = build_catalog(raw).models[mname]
    assert model.inference.read_timeout_seconds == 30.0      # the template's
    assert model.inference.routing == "least-load"           # the model's own
    assert model.inference.cold_start_hold_seconds == 10.0
    assert model.inference.pod_skip_seconds == 12.0         # the template's
    assert model.async_tasks.max_deliveries == 5
    assert model.async_tasks.task_timeout_seconds == 60


def test_inference_extension_rejects_unknown_and_out_of_range_fields() -> None:
    raw = raw_catalog()
    mname = next(iter(raw["models"]))
    raw["models"][mname]["inference"] = {"routing": "round-robin", "read_timout_seconds": 3,
                                         "load_bound_factor": 0.5, "pod_skip_seconds": -1}
    with pytest.raises(CatalogInvalid) as info:
        build_catalog(raw)
    text = str(info.value)
    assert f"sgp-infra:models.{mname}.inference.routing" in text
    assert f"sgp-infra:models.{mname}.inference.read_timout_seconds: unknown field (did you mean " \
           "'read_timeout_seconds'?)" in text
    assert f"sgp-infra:models.{mname}.inference.load_bound_factor" in text
    assert f"sgp-infra:models.{mname}.inference.pod_skip_seconds" in text
