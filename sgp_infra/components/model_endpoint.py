"""``ModelEndpoint``: one model's Deployment, Service, autoscaler and PDB."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Optional, TypedDict

import pulumi

from ..catalog import CatalogInvalid, Model, StackSettings
from ..plan import ModelPlan, plan_model
from ..plan.gpu import resolve_profile
from .resources import child_suffix, register_manifest

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:  # pragma: no cover - 3.10
    from typing_extensions import NotRequired

TYPE = "sgp-infra:index:ModelEndpoint"


class ModelEndpointArgs(TypedDict):
    """Inputs of a :class:`ModelEndpoint`."""

    model: Model
    """The validated model (``Catalog.models[name]``)."""
    settings: StackSettings
    """The stack's settings: namespace, GPU profile, autoscaler, Prometheus URL."""
    namespace: NotRequired[pulumi.Resource]
    """The Namespace resource the model's objects must wait for, when it is created alongside."""
    plan: NotRequired[ModelPlan]
    """The model's plan when the caller already planned the catalogue."""
    secrets: NotRequired[list[pulumi.Resource]]
    """The Secrets its containers read (``ModelSecrets``' envFrom, an ASYNC forwarder's NATS credentials):
    the Deployment waits for them."""


def plan_for(args: ModelEndpointArgs) -> ModelPlan:
    """The given plan, or one made here (raising CatalogInvalid like plan_catalog)."""
    if "plan" in args:
        return args["plan"]
    profile, errors = resolve_profile(args["settings"])
    if profile is None:
        raise CatalogInvalid(errors)
    planned = plan_model(args["model"], args["settings"], profile)
    if isinstance(planned, list):
        raise CatalogInvalid(planned)
    return planned


class ModelEndpoint(pulumi.ComponentResource):
    """A model served on the cluster: exactly the planner's objects for it.

    The Deployment's ``customTimeouts`` cover the model's readiness delay plus
    a margin, so ``pulumi up`` waits out a slow weight load instead of failing
    at the provider's 10-minute default.
    """

    # Declared for type checkers only: Pulumi resolves a resource class's runtime annotations
    # (typing.get_type_hints) on every instantiation, a cost per model with no effect here.
    if TYPE_CHECKING:
        url: pulumi.Output[str]
        """In-cluster URL of the model's Service."""
        deployment_name: pulumi.Output[str]
        placement: pulumi.Output[dict[str, Any]]
        """The resolved GPU placement: profile, resource, count, nodeSelector, tolerations."""

    def __init__(self, name: str, args: ModelEndpointArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__(TYPE, name, None, opts)
        planned = plan_for(args)
        depends_on = [args["namespace"]] if "namespace" in args else None
        timeout = f"{planned.rollout_timeout_seconds}s"
        self.resources: dict[str, pulumi.CustomResource] = {}
        for manifest in planned.manifests:
            suffix = child_suffix(manifest)
            child_opts = pulumi.ResourceOptions(parent=self, depends_on=depends_on)
            if manifest["kind"] == "Deployment":
                child_opts.custom_timeouts = pulumi.CustomTimeouts(create=timeout, update=timeout)
                if "secrets" in args:
                    child_opts.depends_on = [*(depends_on or []), *args["secrets"]]
            self.resources[suffix] = register_manifest(f"{name}-{suffix}", manifest, child_opts)
        # Known from the plan, so they are known in previews too.
        self.url = pulumi.Output.from_input(planned.service_url)
        self.deployment_name = pulumi.Output.from_input(planned.deployment_name)
        self.placement = pulumi.Output.from_input(planned.placement.to_dict())
        self.register_outputs({"url": self.url, "deployment_name": self.deployment_name,
                               "placement": self.placement})
