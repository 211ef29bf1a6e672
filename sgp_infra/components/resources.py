"""Planned manifest dict → the typed pulumi_kubernetes resource of its kind.

Components never build manifests: they take the planner's dicts and hand them
to this function, which picks the resource class by ``apiVersion``/``kind``
and passes each top-level field through unchanged.  Kinds without a typed
class (KEDA's ScaledObject and other custom resources) become
``apiextensions.CustomResource``.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, Optional

import pulumi
import pulumi_kubernetes as k8s

#: A typed resource class, seen as what this module calls it with:
#: ``cls(name, metadata=..., opts=..., **snake_case_fields)``.
ResourceClass = Callable[..., pulumi.CustomResource]

#: Typed classes for the core kinds sgp-infra plans.
TYPED: dict[tuple[str, str], ResourceClass] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.autoscaling.v2.HorizontalPodAutoscaler,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("networking.k8s.io/v1", "Ingress"): k8s.networking.v1.Ingress,
    ("scheduling.k8s.io/v1", "PriorityClass"): k8s.scheduling.v1.PriorityClass,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.rbac.v1.ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.rbac.v1.ClusterRoleBinding,
}

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


@functools.cache
def _snake(field: str) -> str:
    """``stringData`` → ``string_data`` (memoised: a few field names, thousands of objects)."""
    return _CAMEL.sub("_", field).lower()


def child_suffix(manifest: Mapping[str, Any]) -> str:
    """A component child's name suffix: the kind, lower-case (``deployment``, ``scaledobject``…)."""
    return manifest["kind"].lower()


def resource_class(manifest: Mapping[str, Any]) -> Optional[ResourceClass]:
    """The typed class for a manifest, or ``None`` for a custom resource."""
    return TYPED.get((manifest["apiVersion"], manifest["kind"]))


def register_manifest(name: str, manifest: Mapping[str, Any], opts: Optional[pulumi.ResourceOptions] = None,
                      *, namespace: Optional[pulumi.Input[str]] = None) -> pulumi.CustomResource:
    """Register one planned object as a Pulumi resource named ``name``.

    ``namespace``, when given, replaces ``metadata.namespace`` of a namespaced
    object: passing the Namespace resource's output makes the dependency
    explicit, so the namespace exists before anything is created in it.
    """
    metadata: dict[str, Any] = dict(manifest["metadata"])
    if namespace is not None and "namespace" in metadata:
        metadata["namespace"] = namespace
    fields = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "metadata")}
    cls = resource_class(manifest)
    if cls is None:
        return k8s.apiextensions.CustomResource(
            name, api_version=manifest["apiVersion"], kind=manifest["kind"], metadata=metadata,
            opts=opts, **fields,
        )
    return cls(name, metadata=metadata, opts=opts, **{_snake(k): v for k, v in fields.items()})


def register_secret(name: str, manifest: Mapping[str, Any], string_data: pulumi.Input[Mapping[str, Any]],
                    opts: Optional[pulumi.ResourceOptions] = None) -> pulumi.CustomResource:
    """Register a planned Secret (metadata only, from the planner) with its values as ``stringData``.

    The values go to the engine as a Pulumi secret, and the provider's
    ``stringData`` and ``data`` outputs are kept secret too, so no value is
    ever stored or shown in clear in the state or a preview.
    """
    secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["stringData", "data"])
    return register_manifest(name, {**manifest, "stringData": pulumi.Output.secret(string_data)},
                             pulumi.ResourceOptions.merge(opts, secret_opts))
