"""A model's ClusterIP Service; its annotations tell the API how to call the model."""

from __future__ import annotations

from typing import Any

from ..catalog import Model, StackSettings
from .constants import MODEL_PORT_NAME, SERVICE_PORT
from .labels import model_annotations, model_labels, selector_labels


def service_url(model: Model, settings: StackSettings) -> str:
    """The in-cluster URL (port 80 is implied)."""
    return f"http://{model.object_name}.{settings.namespace}.svc.cluster.local"


def service(model: Model, settings: StackSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": model.object_name, "namespace": settings.namespace, "labels": model_labels(model),
                     "annotations": dict(model_annotations(model))},
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(model),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": MODEL_PORT_NAME, "protocol": "TCP"}],
        },
    }
