"""A model's ClusterIP Service, whose in-cluster URL the API calls; its annotations record how the model is called."""

from __future__ import annotations

from typing import Any

from ..catalog import Model, StackSettings
from .constants import MODEL_PORT_NAME, SERVICE_PORT
from .labels import model_metadata, selector_labels


def in_cluster_url(service_name: str, namespace: str) -> str:
    """A Service's in-cluster URL (port 80 is implied)."""
    return f"http://{service_name}.{namespace}.svc.cluster.local"


def service_url(model: Model, settings: StackSettings) -> str:
    """The model's in-cluster URL."""
    return in_cluster_url(model.object_name, settings.namespace)


def service(model: Model, settings: StackSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": model_metadata(model, settings.namespace, annotated=True),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(model),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": MODEL_PORT_NAME, "protocol": "TCP"}],
        },
    }
