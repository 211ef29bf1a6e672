"""The sgp-infra CrossGuard policies: Pulumi resources adapted to :mod:`sgp_policies`.

The checks live in :mod:`sgp_policies` as plain functions over manifest dicts
(unit-tested on the planner's manifests); this file only adapts Pulumi's
resources to manifests and reports each problem as a violation.

Per-stack config (``--policy-pack-config``), all optional::

    {"gpu-quota": {"gpuQuota": {"nvidia-ampere-a100": 8}},
     "gpu-node-selector": {"gpuNodeLabelKeys": ["example.com/gpu"]},
     "high-priority-keeps-a-worker": {"highPriorityClasses": ["sgp-infra-high-priority"]}}

Without a ``gpuQuota`` the quota comes from the stack's own
``sgp-infra:gpuQuota``, read from the catalogue it publishes.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

import sgp_policies as checks


def _resource_policy(name: str, description: str,
                     check: Callable[..., list[str]], config_key: Optional[str] = None,
                     schema: Optional[PolicyConfigSchema] = None) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        manifest = checks.manifest_of(args.resource_type, args.props)
        if manifest is None:
            return
        extra: list[Any] = []
        if config_key and (args.get_config() or {}).get(config_key):
            extra.append(tuple((args.get_config() or {})[config_key]))
        for problem in check(manifest, *extra):
            report_violation(problem, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    enforcement_level=EnforcementLevel.MANDATORY, config_schema=schema)


def _manifests(args: StackValidationArgs) -> list[Mapping[str, Any]]:
    out = []
    for resource in args.resources:
        manifest = checks.manifest_of(resource.resource_type, resource.props)
        if manifest is not None:
            out.append(manifest)
    return out


def _gpu_quota(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    manifests = _manifests(args)
    quota = (args.get_config() or {}).get("gpuQuota") or checks.quota_from_catalog(manifests)
    for problem in checks.check_gpu_quota(manifests, quota):
        report_violation(problem, None)


def _high_priority(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    classes = tuple((args.get_config() or {}).get("highPriorityClasses") or checks.HIGH_PRIORITY_CLASSES)
    for problem in checks.check_high_priority_min_workers(_manifests(args), classes):
        report_violation(problem, None)


def _async_task_limit(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for problem in checks.check_async_task_limit(_manifests(args)):
        report_violation(problem, None)


NAME = "sgp-infra"
DESCRIPTION = "Guardrails for an SGP model catalogue deployed by sgp-infra"

POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    _resource_policy("resource-limits", "Every workload container has CPU and memory limits.",
                     checks.check_resource_limits),
    _resource_policy(
        "gpu-node-selector",
        "A pod that asks for a GPU selects GPU nodes of that kind, and only GPU pods select GPU nodes.",
        checks.check_gpu_node_selector, "gpuNodeLabelKeys",
        PolicyConfigSchema(properties={"gpuNodeLabelKeys": {"type": "array", "items": {"type": "string"}}}),
    ),
    _resource_policy("images-pinned", "Every image names a version tag (not latest) or a digest.",
                     checks.check_image_pinned),
    _resource_policy("api-restricted-pods", "The API pods meet the restricted Pod Security Standard.",
                     checks.check_api_restricted),
    StackValidationPolicy(
        name="gpu-quota",
        description="GPUs per type at max scale stay within the stack's quota.",
        validate=_gpu_quota,
        enforcement_level=EnforcementLevel.ADVISORY,
        config_schema=PolicyConfigSchema(properties={
            "gpuQuota": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        }),
    ),
    StackValidationPolicy(
        name="high-priority-keeps-a-worker",
        description="High-priority models keep min_workers >= 1 (no scale to zero).",
        validate=_high_priority,
        enforcement_level=EnforcementLevel.ADVISORY,
        config_schema=PolicyConfigSchema(properties={
            "highPriorityClasses": {"type": "array", "items": {"type": "string"}},
        }),
    ),
    StackValidationPolicy(
        name="async-scale-to-zero-has-a-task-limit",
        description="ASYNC models that can scale to zero set async_tasks.task_timeout_seconds.",
        validate=_async_task_limit,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
]
