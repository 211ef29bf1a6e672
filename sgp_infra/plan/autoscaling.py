"""A model's autoscaler: a KEDA ScaledObject (default) or an autoscaling/v2 HPA.

The load signal is the number of requests in flight to the model, which the
API exports per replica as ``sgp_infra_model_requests_in_flight{model=...}``;
the trigger sums it across replicas (scoped to the stack's namespace, a label
Prometheus adds from the scrape target, so stacks sharing one Prometheus never
read each other's load), and ``per_worker`` is the target per
model replica.  ASYNC models scale on their task queue instead (KEDA's
``nats-jetstream`` trigger on the model's consumer, see ``plan/nats.py``).
KEDA can scale to zero (it activates on the first request in flight); a
plain HPA cannot go below one replica.
"""

from __future__ import annotations

from typing import Any, Optional

from ..catalog import ConfigError, Model, StackSettings, config_path
from ..catalog.entities import ModelV4
from .constants import IN_FLIGHT_METRIC
from .labels import model_metadata


def owns_replicas(model: Model) -> bool:
    """An autoscaler is planned only when the replica count can actually vary."""
    return model.max_workers > model.min_workers


def in_flight_query(model: Model, namespace: str) -> str:
    """The model's in-flight requests summed over API replicas, in this stack's namespace only.

    The API exports only ``model``; ``namespace`` is the target label that
    Prometheus' Kubernetes service discovery (and a ServiceMonitor/PodMonitor)
    attaches to every scraped series, so two stacks whose models share an
    object name don't read each other's load.
    """
    return f'sum({IN_FLIGHT_METRIC}{{model="{model.object_name}",namespace="{namespace}"}})'


def min_workers_path(model: Model) -> str:
    if model.api_version == "v5":
        return config_path("models", model.name, "vendor_configuration", "model_infra", "min_workers")
    return config_path("models", model.name, "min_workers")


def check(model: Model, settings: StackSettings) -> Optional[ConfigError]:
    """HPA cannot scale to zero: ``min_workers: 0`` is an error under it; nor can it read a JetStream queue."""
    if settings.autoscaler == "hpa" and model.is_async and owns_replicas(model):
        return ConfigError(
            endpoint_type_path(model),
            "is ASYNC, which scales on its task queue with KEDA's nats-jetstream scaler, but "
            "sgp-infra:autoscaler is hpa; use the default autoscaler keda, or set min_workers equal to max_workers")
    if settings.autoscaler == "hpa" and model.min_workers == 0 and owns_replicas(model):
        where = ""
        if isinstance(model.spec, ModelV4) and model.spec.min_workers is None and model.template is not None:
            where = f" (from template '{model.template.name}')"
        return ConfigError(
            min_workers_path(model),
            f"is 0{where}, but sgp-infra:autoscaler is hpa, which cannot scale to zero; "
            "set min_workers to 1 or more, or use the default autoscaler keda",
        )
    return None


def endpoint_type_path(model: Model) -> str:
    if model.api_version == "v5":
        return config_path("models", model.name, "vendor_configuration", "model_infra", "endpoint_type")
    if model.template is not None:
        return config_path("templates", model.template.name, "endpoint_type")
    return config_path("models", model.name)


def jetstream_trigger(model: Model, settings: StackSettings) -> dict[str, Any]:
    """KEDA's nats-jetstream trigger on the model's consumer: ``per_worker`` waiting tasks per replica,
    and active from the first waiting task, so a model at zero wakes from its own queue."""
    from . import nats

    queue = nats.model_queue(model, settings.namespace)
    return {
        "type": "nats-jetstream",
        "metadata": {
            "natsServerMonitoringEndpoint": nats.monitoring_endpoint(settings) or "",
            "account": settings.async_.account,
            "stream": nats.stream_name(settings.namespace),
            "consumer": queue.consumer,
            "lagThreshold": str(model.per_worker),
            "activationLagThreshold": "0",
            "useHttps": "false",
        },
    }


def prometheus_trigger(model: Model, settings: StackSettings) -> dict[str, Any]:
    return {
        "type": "prometheus",
        "metadata": {
            "serverAddress": settings.prometheus_url,
            "query": in_flight_query(model, settings.namespace),
            "threshold": str(model.per_worker),
            "activationThreshold": "0",
            "ignoreNullValues": "true",
        },
    }


def _target(model: Model) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": model.object_name}


def scaled_object(model: Model, settings: StackSettings) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": model_metadata(model, settings.namespace),
        "spec": {
            "scaleTargetRef": _target(model),
            "minReplicaCount": model.min_workers,
            "maxReplicaCount": model.max_workers,
            "pollingInterval": 15,
            # Scale-in (and to zero) waits this long after the last request.
            "cooldownPeriod": 300,
            "triggers": [jetstream_trigger(model, settings) if model.is_async else prometheus_trigger(model, settings)],
        },
    }


def hpa(model: Model, settings: StackSettings) -> dict[str, Any]:
    """An autoscaling/v2 HPA on the external metric (served by prometheus-adapter)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": model_metadata(model, settings.namespace),
        "spec": {
            "scaleTargetRef": _target(model),
            "minReplicas": model.min_workers,
            "maxReplicas": model.max_workers,
            "metrics": [{
                "type": "External",
                "external": {
                    "metric": {"name": IN_FLIGHT_METRIC, "selector": {"matchLabels": {"model": model.object_name}}},
                    "target": {"type": "AverageValue", "averageValue": str(model.per_worker)},
                },
            }],
        },
    }


def autoscaler(model: Model, settings: StackSettings) -> Optional[dict[str, Any]]:
    if not owns_replicas(model):
        return None
    return hpa(model, settings) if settings.autoscaler == "hpa" else scaled_object(model, settings)
