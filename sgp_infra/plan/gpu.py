"""GPU types → where a pod runs: node selectors, tolerations, the GPU resource.

The SGP API names GPUs by type (``nvidia-ampere-a100``); clusters label their
GPU nodes in different ways.  A *profile* maps each type to a node selector
and the extended resource the pod requests.  A stack picks one with
``sgp-infra:gpuProfile`` (``eks`` by default, Launch's own convention) or
writes its own map.  A type the profile cannot place is a config error: the
alternative is a pod that stays Pending forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from ..catalog import ConfigError, Model, StackSettings, config_path
from ..catalog.entities import GPU_TYPES
from .labels import label_problem

GPU_RESOURCE = "nvidia.com/gpu"

#: The NVIDIA device plugin's taint on GPU nodes (EKS, GKE and GPU operator
#: node pools all use this key); tolerating it is what lets a pod land there.
DEFAULT_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
)

EKS_KEY = "k8s.amazonaws.com/accelerator"
GKE_KEY = "cloud.google.com/gke-accelerator"
GKE_PARTITION_KEY = "cloud.google.com/gke-gpu-partition-size"
KARPENTER_KEY = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_MEMORY_KEY = "karpenter.k8s.aws/instance-gpu-memory"
NFD_KEY = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class TypeRule:
    """How one GPU type is placed: node labels to select and the resource to request."""

    node_selector: Mapping[str, str]
    resource: str = GPU_RESOURCE


@dataclass(frozen=True)
class GpuProfile:
    name: str
    types: Mapping[str, TypeRule]
    tolerations: tuple[Mapping[str, Any], ...] = DEFAULT_TOLERATIONS
    #: Why a type is missing, for the error message (e.g. "GKE has no A10").
    missing: Mapping[str, str] = field(default_factory=dict)


def _single(key: str, values: Mapping[str, str]) -> dict[str, TypeRule]:
    return {t: TypeRule({key: v}) for t, v in values.items()}


_H100_PRODUCT = "NVIDIA-H100-80GB-HBM3"

BUILTIN_PROFILES: dict[str, GpuProfile] = {
    # Launch's convention: the SGP gpu_type verbatim, MIG types included.
    "eks": GpuProfile("eks", {t: TypeRule({EKS_KEY: t}) for t in GPU_TYPES}),
    "gke": GpuProfile(
        "gke",
        {
            **_single(GKE_KEY, {
                "nvidia-tesla-t4": "nvidia-tesla-t4",
                "nvidia-ampere-a100": "nvidia-tesla-a100",
                "nvidia-ampere-a100e": "nvidia-a100-80gb",
                "nvidia-hopper-h100": "nvidia-h100-80gb",
            }),
            # GKE exposes a MIG partition as one nvidia.com/gpu on nodes whose
            # GPUs were partitioned at node-pool creation.
            "nvidia-hopper-h100-1g20gb": TypeRule({GKE_KEY: "nvidia-h100-80gb", GKE_PARTITION_KEY: "1g.20gb"}),
            "nvidia-hopper-h100-3g40gb": TypeRule({GKE_KEY: "nvidia-h100-80gb", GKE_PARTITION_KEY: "3g.40gb"}),
        },
        missing={"nvidia-ampere-a10": "GKE offers no A10 GPUs"},
    ),
    "karpenter": GpuProfile(
        "karpenter",
        {
            **_single(KARPENTER_KEY, {"nvidia-tesla-t4": "t4", "nvidia-ampere-a10": "a10g",
                                      "nvidia-hopper-h100": "h100"}),
            "nvidia-ampere-a100": TypeRule({KARPENTER_KEY: "a100", KARPENTER_MEMORY_KEY: "40960"}),
            "nvidia-ampere-a100e": TypeRule({KARPENTER_KEY: "a100", KARPENTER_MEMORY_KEY: "81920"}),
        },
        missing={t: "EC2 instances Karpenter launches have no native MIG partitions"
                 for t in ("nvidia-hopper-h100-1g20gb", "nvidia-hopper-h100-3g40gb")},
    ),
    "nfd": GpuProfile(
        "nfd",
        {
            **_single(NFD_KEY, {
                "nvidia-tesla-t4": "Tesla-T4",
                "nvidia-ampere-a10": "NVIDIA-A10G",
                "nvidia-ampere-a100": "NVIDIA-A100-SXM4-40GB",
                "nvidia-ampere-a100e": "NVIDIA-A100-SXM4-80GB",
                "nvidia-hopper-h100": _H100_PRODUCT,
            }),
            # The GPU operator's "mixed" MIG strategy advertises each slice
            # size as its own resource; the product label stays the full GPU's.
            "nvidia-hopper-h100-1g20gb": TypeRule({NFD_KEY: _H100_PRODUCT}, "nvidia.com/mig-1g.20gb"),
            "nvidia-hopper-h100-3g40gb": TypeRule({NFD_KEY: _H100_PRODUCT}, "nvidia.com/mig-3g.40gb"),
        },
    ),
}


@dataclass(frozen=True)
class Placement:
    """Where a model's pods run: the outcome of its gpu_type under the profile."""

    profile: str
    gpu_type: Optional[str]
    resource: Optional[str]
    count: int
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, as the components export it."""
        return {
            "profile": self.profile,
            "gpuType": self.gpu_type,
            "resource": self.resource,
            "count": self.count,
            "nodeSelector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
        }


PROFILE_PATH = config_path("gpuProfile")


def resolve_profile(settings: StackSettings) -> tuple[Optional[GpuProfile], list[ConfigError]]:
    """The stack's profile, or the errors that make ``gpuProfile`` unusable."""
    value = settings.gpu_profile
    if isinstance(value, str):
        if value in BUILTIN_PROFILES:
            return BUILTIN_PROFILES[value], []
        known = ", ".join(sorted(BUILTIN_PROFILES))
        return None, [ConfigError(PROFILE_PATH, f"unknown GPU profile {value!r}; use one of {known}, "
                                                "or a map (see docs/kubernetes.md)")]
    return _custom_profile(value)


_CUSTOM_KEYS = {"extends", "tolerations", "types"}


def _custom_profile(value: Mapping[str, Any]) -> tuple[Optional[GpuProfile], list[ConfigError]]:
    """A profile written in config: ``{extends?, tolerations?, types: {gpu_type: {nodeSelector, resource?}}}``."""
    errors: list[ConfigError] = []
    for key in value:
        if key not in _CUSTOM_KEYS:
            errors.append(ConfigError(config_path("gpuProfile", str(key)),
                                      f"unknown key; a custom profile has {', '.join(sorted(_CUSTOM_KEYS))}"))
    types: dict[str, TypeRule] = {}
    tolerations = DEFAULT_TOLERATIONS
    base = value.get("extends")
    if base is not None:
        if not isinstance(base, str) or base not in BUILTIN_PROFILES:  # a list or map is no profile name
            known = ", ".join(sorted(BUILTIN_PROFILES))
            errors.append(ConfigError(config_path("gpuProfile", "extends"),
                                      f"unknown GPU profile {base!r}; use one of {known}"))
        else:
            types.update(BUILTIN_PROFILES[base].types)
            tolerations = BUILTIN_PROFILES[base].tolerations
    if "tolerations" in value:
        tol = value["tolerations"]
        if not isinstance(tol, list) or not all(isinstance(t, dict) for t in tol):
            errors.append(ConfigError(config_path("gpuProfile", "tolerations"),
                                      "must be a list of tolerations ({key, operator, value?, effect})"))
        else:
            tolerations = tuple(tol)
    raw_types = value.get("types", {})
    if not isinstance(raw_types, dict):
        errors.append(ConfigError(config_path("gpuProfile", "types"), "must map gpu_type to {nodeSelector, resource}"))
        raw_types = {}
    if base is None and not raw_types:
        errors.append(ConfigError(PROFILE_PATH, "a custom profile needs 'types' or 'extends'"))
    for gpu_type, rule in raw_types.items():
        rule_errors, parsed = _type_rule(str(gpu_type), rule)
        errors.extend(rule_errors)
        if parsed:
            types[str(gpu_type)] = parsed
    if errors:
        return None, errors
    return GpuProfile("custom", types, tolerations), []


def _type_rule(gpu_type: str, rule: Any) -> tuple[list[ConfigError], Optional[TypeRule]]:
    path = ("gpuProfile", "types", gpu_type)
    if gpu_type not in GPU_TYPES:
        return [ConfigError(config_path(*path), f"unknown gpu_type; the SGP API names {', '.join(GPU_TYPES)}")], None
    if not isinstance(rule, dict) or not isinstance(rule.get("nodeSelector", {}), dict):
        return [ConfigError(config_path(*path),
                            "must be {nodeSelector: {label: value}, resource: nvidia.com/gpu}")], None
    errors = [ConfigError(config_path(*path, str(k)), "unknown key; use nodeSelector and resource")
              for k in rule if k not in ("nodeSelector", "resource")]
    selector = {str(k): str(v) for k, v in rule.get("nodeSelector", {}).items()}
    for key, val in selector.items():
        problem = label_problem(key, val, reserved_ok=True)
        if problem:
            errors.append(ConfigError(config_path(*path, "nodeSelector", key), problem))
    resource = rule.get("resource", GPU_RESOURCE)
    if not isinstance(resource, str) or "/" not in resource:
        errors.append(ConfigError(config_path(*path, "resource"),
                                  f"{resource!r} is not an extended resource name (example: nvidia.com/gpu)"))
    return errors, (None if errors else TypeRule(selector, resource))


def gpu_type_path(model: Model) -> str:
    """The config path of a model's gpu_type, as the user reaches it."""
    if model.api_version == "v5":
        return config_path("models", model.name, "vendor_configuration", "model_infra", "gpu_type")
    return model.path


def place(model: Model, profile: GpuProfile) -> Union[Placement, ConfigError]:
    """The model's placement under ``profile``, or why it cannot be placed."""
    if not model.gpus or not model.gpu_type:
        return Placement(profile.name, None, None, 0, {}, ())
    rule = profile.types.get(model.gpu_type)
    if rule is None:
        reason = profile.missing.get(model.gpu_type, "the profile maps no rule for it")
        where = "" if model.template is None else f" (from template '{model.template.name}')"
        return ConfigError(
            gpu_type_path(model),
            f"gpu_type {model.gpu_type}{where} cannot be placed by GPU profile '{profile.name}': {reason}; "
            f"pick another gpu_type or map it in sgp-infra:gpuProfile",
        )
    return Placement(profile.name, model.gpu_type, rule.resource, model.gpus,
                     dict(rule.node_selector), tuple(profile.tolerations))
