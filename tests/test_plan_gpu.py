"""GPU placement: every GPU type under every built-in profile, MIG, custom maps, errors."""

from __future__ import annotations

import pytest

from plan_fixtures import container, plan_errors, plan_raw, pod_spec, raw_catalog, v5_model
from sgp_infra.catalog.entities import GPU_TYPES, MIG_GPU_TYPES
from sgp_infra.plan.gpu import BUILTIN_PROFILES

TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

# (profile, gpu_type) → (nodeSelector, resource), or None when it cannot be placed.
EXPECTED = {
    "eks": {t: ({"k8s.amazonaws.com/accelerator": t}, "nvidia.com/gpu") for t in GPU_TYPES},
    "gke": {
        "nvidia-tesla-t4": ({"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}, "nvidia.com/gpu"),
        "nvidia-ampere-a10": None,
        "nvidia-ampere-a100": ({"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}, "nvidia.com/gpu"),
        "nvidia-ampere-a100e": ({"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"}, "nvidia.com/gpu"),
        "nvidia-hopper-h100": ({"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}, "nvidia.com/gpu"),
        "nvidia-hopper-h100-1g20gb": ({"cloud.google.com/gke-accelerator": "nvidia-h100-80gb",
                                       "cloud.google.com/gke-gpu-partition-size": "1g.20gb"}, "nvidia.com/gpu"),
        "nvidia-hopper-h100-3g40gb": ({"cloud.google.com/gke-accelerator": "nvidia-h100-80gb",
                                       "cloud.google.com/gke-gpu-partition-size": "3g.40gb"}, "nvidia.com/gpu"),
    },
    "karpenter": {
        "nvidia-tesla-t4": ({"karpenter.k8s.aws/instance-gpu-name": "t4"}, "nvidia.com/gpu"),
        "nvidia-ampere-a10": ({"karpenter.k8s.aws/instance-gpu-name": "a10g"}, "nvidia.com/gpu"),
        "nvidia-ampere-a100": ({"karpenter.k8s.aws/instance-gpu-name": "a100",
                                "karpenter.k8s.aws/instance-gpu-memory": "40960"}, "nvidia.com/gpu"),
        "nvidia-ampere-a100e": ({"karpenter.k8s.aws/instance-gpu-name": "a100",
                                 "karpenter.k8s.aws/instance-gpu-memory": "81920"}, "nvidia.com/gpu"),
        "nvidia-hopper-h100": ({"karpenter.k8s.aws/instance-gpu-name": "h100"}, "nvidia.com/gpu"),
        "nvidia-hopper-h100-1g20gb": None,
        "nvidia-hopper-h100-3g40gb": None,
    },
    "nfd": {
        "nvidia-tesla-t4": ({"nvidia.com/gpu.product": "Tesla-T4"}, "nvidia.com/gpu"),
        "nvidia-ampere-a10": ({"nvidia.com/gpu.product": "NVIDIA-A10G"}, "nvidia.com/gpu"),
        "nvidia-ampere-a100": ({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}, "nvidia.com/gpu"),
        "nvidia-ampere-a100e": ({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, "nvidia.com/gpu"),
        "nvidia-hopper-h100": ({"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "nvidia.com/gpu"),
        "nvidia-hopper-h100-1g20gb": ({"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "nvidia.com/mig-1g.20gb"),
        "nvidia-hopper-h100-3g40gb": ({"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "nvidia.com/mig-3g.40gb"),
    },
}


def test_every_builtin_profile_is_covered() -> None:
    assert set(EXPECTED) == set(BUILTIN_PROFILES)
    for table in EXPECTED.values():
        assert set(table) == set(GPU_TYPES)


def _raw(profile: object, gpu_type: str, gpus: int = 1) -> dict:
    raw = raw_catalog()
    raw["gpuProfile"] = profile
    raw["models"] = {"m5": v5_model(gpu_type=gpu_type, gpus=gpus)}
    raw["modelGroups"] = {}
    return raw


@pytest.mark.parametrize("profile,gpu_type", [(p, t) for p in EXPECTED for t in GPU_TYPES])
def test_gpu_type_under_profile(profile: str, gpu_type: str) -> None:
    expected = EXPECTED[profile][gpu_type]
    raw = _raw(profile, gpu_type, gpus=1 if gpu_type in MIG_GPU_TYPES else 2)
    if expected is None:
        errors = plan_errors(raw)
        path = "sgp-infra:models.m5.vendor_configuration.model_infra.gpu_type"
        assert list(errors) == [path]
        assert f"cannot be placed by GPU profile '{profile}'" in errors[path]
        return
    selector, resource = expected
    plan = plan_raw(raw)
    pod = pod_spec(plan, "m5")
    assert pod["nodeSelector"] == selector
    assert pod["tolerations"] == [TOLERATION]
    gpus = raw["models"]["m5"]["vendor_configuration"]["model_infra"]["gpus"]
    res = container(plan, "m5")["resources"]
    assert res["requests"][resource] == res["limits"][resource] == str(gpus)
    other = {"nvidia.com/gpu", "nvidia.com/mig-1g.20gb", "nvidia.com/mig-3g.40gb"} - {resource}
    assert not other & set(res["limits"])
    assert plan.models["m5"].placement.to_dict() == {
        "profile": profile, "gpuType": gpu_type, "resource": resource, "count": gpus,
        "nodeSelector": selector, "tolerations": [TOLERATION],
    }


def test_cpu_model_has_no_gpu_placement() -> None:
    raw = _raw("gke", "nvidia-tesla-t4")
    infra = raw["models"]["m5"]["vendor_configuration"]["model_infra"]
    infra["gpus"] = 0
    del infra["gpu_type"]
    plan = plan_raw(raw)
    pod = pod_spec(plan, "m5")
    assert "nodeSelector" not in pod and "tolerations" not in pod and "volumes" not in pod
    assert "nvidia.com/gpu" not in container(plan, "m5")["resources"]["limits"]
    assert plan.models["m5"].placement.count == 0


def test_v4_unplaceable_gpu_names_the_model_and_its_template() -> None:
    raw = raw_catalog()
    raw["gpuProfile"] = "gke"
    raw["templates"]["tpl"]["vendor_configuration"]["endpoint_config"]["gpu_type"] = "nvidia-ampere-a10"
    errors = plan_errors(raw)
    assert "sgp-infra:models.m4" in errors
    assert "template 'tpl'" in errors["sgp-infra:models.m4"]
    assert "GKE offers no A10" in errors["sgp-infra:models.m4"]


def test_all_unplaceable_models_are_reported_together() -> None:
    raw = _raw("karpenter", "nvidia-hopper-h100-1g20gb")
    raw["models"]["other"] = v5_model(gpu_type="nvidia-hopper-h100-3g40gb")
    errors = plan_errors(raw)
    assert set(errors) == {"sgp-infra:models.m5.vendor_configuration.model_infra.gpu_type",
                           "sgp-infra:models.other.vendor_configuration.model_infra.gpu_type"}


def test_unknown_profile_name() -> None:
    errors = plan_errors(_raw("aks", "nvidia-tesla-t4"))
    assert "unknown GPU profile 'aks'" in errors["sgp-infra:gpuProfile"]


def test_custom_profile_map() -> None:
    profile = {
        "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        "types": {"nvidia-tesla-t4": {"nodeSelector": {"acme.io/gpu": "t4"}},
                  "nvidia-hopper-h100-1g20gb": {"nodeSelector": {"acme.io/gpu": "h100"},
                                                "resource": "nvidia.com/mig-1g.20gb"}},
    }
    plan = plan_raw(_raw(profile, "nvidia-hopper-h100-1g20gb"))
    pod = pod_spec(plan, "m5")
    assert pod["nodeSelector"] == {"acme.io/gpu": "h100"}
    assert pod["tolerations"] == profile["tolerations"]
    assert container(plan, "m5")["resources"]["limits"]["nvidia.com/mig-1g.20gb"] == "1"
    assert plan.models["m5"].placement.profile == "custom"
    errors = plan_errors(_raw(profile, "nvidia-ampere-a10"))
    assert "profile 'custom'" in errors["sgp-infra:models.m5.vendor_configuration.model_infra.gpu_type"]


def test_custom_profile_extends_a_builtin_one() -> None:
    profile = {"extends": "gke", "types": {"nvidia-ampere-a10": {"nodeSelector": {"acme.io/gpu": "a10"}}}}
    plan = plan_raw(_raw(profile, "nvidia-ampere-a10"))
    assert pod_spec(plan, "m5")["nodeSelector"] == {"acme.io/gpu": "a10"}
    plan = plan_raw(_raw(profile, "nvidia-tesla-t4"))
    assert pod_spec(plan, "m5")["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}


def test_bad_custom_profile_reports_each_problem_with_its_path() -> None:
    profile = {
        "extends": "azure",
        "colour": "blue",
        "types": {
            "nvidia-tesla-p100": {"nodeSelector": {"a": "b"}},
            "nvidia-tesla-t4": {"nodeSelector": {"bad key!": "t4"}, "resource": "gpu", "zone": "x"},
        },
    }
    errors = plan_errors(_raw(profile, "nvidia-tesla-t4"))
    assert set(errors) == {
        "sgp-infra:gpuProfile.extends",
        "sgp-infra:gpuProfile.colour",
        "sgp-infra:gpuProfile.types.nvidia-tesla-p100",
        'sgp-infra:gpuProfile.types.nvidia-tesla-t4.nodeSelector["bad key!"]',
        "sgp-infra:gpuProfile.types.nvidia-tesla-t4.resource",
        "sgp-infra:gpuProfile.types.nvidia-tesla-t4.zone",
    }


def test_gpu_pods_get_a_memory_backed_dev_shm() -> None:
    plan = plan_raw(_raw("eks", "nvidia-tesla-t4"))
    pod = pod_spec(plan, "m5")
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    assert container(plan, "m5")["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]


def test_extends_that_is_not_a_name_is_a_config_error() -> None:
    # A list or map under extends must be reported with its path, not raise TypeError (unhashable).
    for extends in (["eks"], {"name": "eks"}):
        errors = plan_errors(_raw({"extends": extends}, "nvidia-tesla-t4"))
        assert "sgp-infra:gpuProfile.extends" in errors
