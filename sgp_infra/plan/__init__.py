"""The planner: a validated catalogue → Kubernetes manifests as plain dicts.

Pure functions, no Pulumi: this is the only code that decides what a manifest
contains.  The Pulumi components register exactly these dicts and the
``render`` command writes exactly these dicts, so what CI renders is what
``pulumi up`` deploys.

Problems only visible when planning (a GPU type the cluster profile cannot
place, ``min_workers: 0`` under an HPA, bad v5 labels) are collected for the
whole catalogue and raised together as :class:`CatalogInvalid`, each with its
config path, like the catalogue's own validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..catalog import Catalog, CatalogInvalid, ConfigError, Model, StackSettings, config_path
from . import autoscaling, disruption, nats
from .constants import IN_FLIGHT_METRIC, MODEL_PORT, SERVICE_PORT
from .deployment import deployment, rollout_timeout_seconds
from .gpu import GpuProfile, Placement, place, resolve_profile
from .labels import label_problem, model_labels, selector_labels
from .service import service, service_url
from .stack import stack_objects


@dataclass(frozen=True)
class ModelPlan:
    """Everything planned for one model."""

    name: str
    object_name: str
    namespace: str
    #: Deployment, Service, then the autoscaler and PDB when planned.
    manifests: list[dict[str, Any]]
    deployment_name: str
    service_url: str
    placement: Placement
    #: Seconds ``pulumi up`` waits for the Deployment (readiness delay + margin).
    rollout_timeout_seconds: int
    #: "keda", "hpa" or None (fixed replica count).
    autoscaler: Optional[str]


@dataclass(frozen=True)
class Plan:
    """The whole stack: every manifest in apply order, and each model's part."""

    namespace: str
    #: Namespace, PriorityClasses, NetworkPolicy, and the in-cluster NATS when planned.
    shared: list[dict[str, Any]]
    models: dict[str, ModelPlan] = field(default_factory=dict)

    @property
    def manifests(self) -> list[dict[str, Any]]:
        """Every object: shared ones first, then each model's, by model name."""
        out = list(self.shared)
        for name in sorted(self.models):
            out.extend(self.models[name].manifests)
        return out


def plan_model(model: Model, settings: StackSettings, profile: GpuProfile) -> ModelPlan | list[ConfigError]:
    """One model's objects, or the problems that prevent planning it."""
    errors: list[ConfigError] = []
    placement = place(model, profile)
    if isinstance(placement, ConfigError):
        errors.append(placement)
    problem = autoscaling.check(model, settings)
    if problem:
        errors.append(problem)
    for key, value in model.labels.items():
        label_error = label_problem(key, value)
        if label_error:
            errors.append(ConfigError(
                config_path("models", model.name, "vendor_configuration", "model_infra", "labels", key), label_error))
    if errors or isinstance(placement, ConfigError):
        return errors
    scaler = autoscaling.autoscaler(model, settings)
    manifests = [deployment(model, placement, settings, autoscaled=scaler is not None), service(model, settings)]
    if scaler:
        manifests.append(scaler)
    budget = disruption.pdb(model, settings)
    if budget:
        manifests.append(budget)
    return ModelPlan(
        name=model.name, object_name=model.object_name, namespace=settings.namespace, manifests=manifests,
        deployment_name=model.object_name, service_url=service_url(model, settings), placement=placement,
        rollout_timeout_seconds=rollout_timeout_seconds(model),
        autoscaler=None if scaler is None else settings.autoscaler,
    )


def plan_catalog(catalog: Catalog) -> Plan:
    """Plan every object of a stack; raise :class:`CatalogInvalid` with every problem."""
    settings = catalog.settings
    profile, errors = resolve_profile(settings)
    models: dict[str, ModelPlan] = {}
    if profile is not None:
        for name in sorted(catalog.models):
            planned = plan_model(catalog.models[name], settings, profile)
            if isinstance(planned, list):
                errors.extend(planned)
            else:
                models[name] = planned
    errors.extend(nats.check(catalog))
    if errors:
        raise CatalogInvalid(errors)
    # The in-cluster NATS (when ASYNC models need one) is stack-wide: registered and rendered with the
    # namespace's other shared objects.
    return Plan(namespace=settings.namespace, shared=stack_objects(catalog) + nats.plan_nats(catalog), models=models)


__all__ = [
    "IN_FLIGHT_METRIC", "MODEL_PORT", "SERVICE_PORT", "ModelPlan", "Placement", "Plan",
    "model_labels", "plan_catalog", "plan_model", "selector_labels",
]
