"""Stack-wide objects: the namespace, PriorityClasses, the model NetworkPolicy."""

from __future__ import annotations

from typing import Any

from ..catalog import Catalog
from .constants import HIGH_PRIORITY_CLASS, HIGH_PRIORITY_VALUE, MODEL_NETWORK_POLICY, MODEL_PORT
from .labels import API_POD_SELECTOR, MODEL_POD_SELECTOR, stack_labels


def namespace(catalog: Catalog) -> dict[str, Any]:
    # Model pods meet the baseline Pod Security Standard; warn on restricted.
    labels = {**stack_labels(),
              "pod-security.kubernetes.io/enforce": "baseline",
              "pod-security.kubernetes.io/warn": "restricted"}
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": catalog.settings.namespace, "labels": labels}}


def priority_classes(catalog: Catalog) -> list[dict[str, Any]]:
    """The class high_priority models use, when some do and creation is on.

    PriorityClasses are cluster-scoped: a second stack on the same cluster
    (or a cluster that already has the class) sets
    ``sgp-infra:createPriorityClasses: false``.
    """
    if not catalog.settings.create_priority_classes:
        return []
    if not any(m.high_priority for m in catalog.models.values()):
        return []
    return [{
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": HIGH_PRIORITY_CLASS, "labels": stack_labels()},
        "value": HIGH_PRIORITY_VALUE,
        "globalDefault": False,
        "preemptionPolicy": "PreemptLowerPriority",
        "description": "sgp-infra models marked high_priority: scheduled first, may preempt other pods",
    }]


def network_policy(catalog: Catalog) -> dict[str, Any]:
    """Model pods take traffic only from the catalogue API's pods, on the model port."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": MODEL_NETWORK_POLICY, "namespace": catalog.settings.namespace,
                     "labels": stack_labels()},
        "spec": {
            "podSelector": {"matchLabels": dict(MODEL_POD_SELECTOR)},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": dict(API_POD_SELECTOR)}}],
                "ports": [{"protocol": "TCP", "port": MODEL_PORT}],
            }],
        },
    }


def stack_objects(catalog: Catalog) -> list[dict[str, Any]]:
    """Namespace first (everything lives in it), then priority classes, then the policy."""
    return [namespace(catalog), *priority_classes(catalog), network_policy(catalog)]
