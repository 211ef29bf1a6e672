"""A model's Deployment: image, resources, GPU placement, probes, rollout."""

from __future__ import annotations

import math
from typing import Any, Optional

from ..catalog import Model, StackSettings
from .constants import (
    HIGH_PRIORITY_CLASS,
    MIN_STARTUP_BUDGET_SECONDS,
    MODEL_PORT,
    MODEL_PORT_NAME,
    ROLLOUT_MARGIN_SECONDS,
    TERMINATION_GRACE_SECONDS,
)
from .gpu import Placement
from .labels import model_labels, model_metadata, selector_labels
from .secrets import env_from

CONTAINER_NAME = "model"
PROBE_PERIOD_SECONDS = 10
#: The ASYNC sidecar: pulls the model's tasks from JetStream and calls the model container.
FORWARDER_NAME = "forwarder"
FORWARDER_PORT = 8081
FORWARDER_PORT_NAME = "forwarder"
#: Longest shutdown grace an ASYNC pod gets to finish the tasks it holds; longer tasks are redelivered.
MAX_ASYNC_GRACE_SECONDS = 3600


def rollout_timeout_seconds(model: Model) -> int:
    """How long a rollout may take: the readiness delay plus a margin.

    Used both as the Deployment's ``progressDeadlineSeconds`` and as the
    component's ``customTimeouts``, so neither Kubernetes nor ``pulumi up``
    declares failure while weights are still loading.
    """
    return model.readiness_initial_delay_seconds + ROLLOUT_MARGIN_SECONDS


def startup_budget_seconds(model: Model) -> int:
    """How long the startup probe lets a pod load before restarting it."""
    delay = model.readiness_initial_delay_seconds
    return delay + max(MIN_STARTUP_BUDGET_SECONDS, delay)


def command(model: Model) -> list[str] | None:
    """STREAMING endpoints run ``streaming_command`` when the bundle gives one."""
    if model.streaming and model.streaming_command:
        return list(model.streaming_command)
    return list(model.command) if model.command else None


def resources(model: Model, placement: Placement) -> dict[str, dict[str, str]]:
    """Requests equal to limits: Guaranteed QoS, and what GPU scheduling needs."""
    amounts = {"cpu": str(model.cpus), "memory": str(model.memory), "ephemeral-storage": str(model.storage)}
    if placement.resource and placement.count:
        amounts[placement.resource] = str(placement.count)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def probes(model: Model) -> dict[str, dict[str, Any]]:
    """Readiness, startup and liveness probes.

    The startup probe holds off the other two until the server first answers
    its health route, with a budget long enough for large weights.  Liveness
    then only checks that the port accepts connections: a busy server whose
    health route is slow is not killed, a hung process is.
    """
    http = {"path": model.healthcheck_route, "port": MODEL_PORT_NAME}
    budget = startup_budget_seconds(model)
    return {
        "startupProbe": {
            "httpGet": dict(http),
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(budget / PROBE_PERIOD_SECONDS),
        },
        "readinessProbe": {
            "httpGet": dict(http),
            "initialDelaySeconds": model.readiness_initial_delay_seconds,
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": MODEL_PORT_NAME},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }


def container_security() -> dict[str, Any]:
    """As restricted as a model server allows (it may need to run as root)."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container(model: Model, placement: Placement) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": CONTAINER_NAME, "image": model.image}
    cmd = command(model)
    if cmd:
        spec["command"] = cmd
    if model.env:
        spec["env"] = [{"name": k, "value": v} for k, v in model.env.items()]
    if model.secrets:
        # Tokens from sgp-infra:modelSecrets: referenced, never inlined (plan/secrets.py).
        spec["envFrom"] = env_from(model)
    spec["ports"] = [{"name": MODEL_PORT_NAME, "containerPort": MODEL_PORT, "protocol": "TCP"}]
    spec["resources"] = resources(model, placement)
    spec.update(probes(model))
    spec["securityContext"] = container_security()
    if placement.count:
        spec["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    return spec


def grace_seconds(model: Model) -> int:
    """Shutdown grace: an ASYNC pod's forwarder finishes the tasks it holds (up to their time limit)."""
    if not model.is_async:
        return TERMINATION_GRACE_SECONDS
    return max(TERMINATION_GRACE_SECONDS, min(model.async_tasks.task_timeout_seconds + 30, MAX_ASYNC_GRACE_SECONDS))


def forwarder_container(model: Model, settings: StackSettings) -> dict[str, Any]:
    """The ASYNC sidecar, from the API's image: ``python -m sgp_infra forwarder`` (docs/async.md).

    It reads the published catalogue (the same ConfigMap the API reads), so it
    takes the model's queue names and limits from the one planner function
    (``plan.nats.task_layout``).  Ready when NATS is connected and the model
    container answers its health route, so the pod is ready only when both are.
    """
    from . import nats
    from .api import CATALOG_KEY, CATALOG_MOUNT, RUN_AS

    http = {"port": FORWARDER_PORT_NAME}
    return {
        "name": FORWARDER_NAME,
        "image": settings.api.image,
        "args": ["forwarder", "--config-file", f"{CATALOG_MOUNT}/{CATALOG_KEY}", "--model", model.name,
                 "--backend", f"http://127.0.0.1:{MODEL_PORT}", "--nats", nats.client_url(settings),
                 "--host", "0.0.0.0", "--port", str(FORWARDER_PORT),
                 "--drain-seconds", str(grace_seconds(model) - 5)],
        # With natsUrl: the credentials of the existing NATS, by reference (plan/nats.py).
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}, *nats.credentials_env(settings)],
        "ports": [{"name": FORWARDER_PORT_NAME, "containerPort": FORWARDER_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "readinessProbe": {"httpGet": {**http, "path": "/readyz"}, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {**http, "path": "/healthz"}, "periodSeconds": 20, "failureThreshold": 3,
                          "timeoutSeconds": 5},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
            "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "catalog", "mountPath": CATALOG_MOUNT, "readOnly": True}],
    }


def pod_spec(model: Model, placement: Placement, settings: Optional[StackSettings] = None) -> dict[str, Any]:
    containers = [container(model, placement)]
    volumes: list[dict[str, Any]] = []
    if model.is_async and settings is not None:
        from .api import CATALOG_CONFIGMAP

        containers.append(forwarder_container(model, settings))
        volumes.append({"name": "catalog", "configMap": {"name": CATALOG_CONFIGMAP}})
    spec: dict[str, Any] = {
        # Model servers never call the Kubernetes API, and with hundreds of
        # Services in the namespace, service-link env vars would swamp them.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_seconds(model),
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": containers,
    }
    if model.high_priority:
        spec["priorityClassName"] = HIGH_PRIORITY_CLASS
    if placement.node_selector:
        spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        spec["tolerations"] = [dict(t) for t in placement.tolerations]
    if placement.count:
        # NCCL and PyTorch dataloaders use shared memory far beyond the
        # container runtime's 64Mi default /dev/shm.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    if volumes:
        spec["volumes"] = volumes
    return spec


def deployment(model: Model, placement: Placement, settings: StackSettings, autoscaled: bool) -> dict[str, Any]:
    """The Deployment; ``replicas`` is left to the autoscaler when one owns it."""
    labels = model_labels(model)
    spec: dict[str, Any] = {}
    if not autoscaled:
        spec["replicas"] = model.min_workers
    spec.update({
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": rollout_timeout_seconds(model),
        "selector": {"matchLabels": selector_labels(model)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec(model, placement, settings)},
    })
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": model_metadata(model, settings.namespace, annotated=True),
        "spec": spec,
    }
