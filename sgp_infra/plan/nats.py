"""The NATS JetStream broker behind ASYNC endpoints: its names and its manifests.

Two things are decided here and nowhere else:

* **The JetStream layout** (:func:`task_layout`): one work-queue stream per
  stack with one subject per ASYNC model (each task is published on
  ``<model subject>.<task id>``, so a queued task can be read back by its id
  alone without a record of its own), one durable pull consumer per model
  (``max_ack_pending = per_worker × max_workers``, ack wait from the task time
  limit, deliveries from ``max_deliveries``) and one key-value bucket for task
  records and results.  The planner (KEDA's trigger names the stream and
  consumer), the API (publishes, reads results) and the forwarder (pulls,
  writes results) all take their names and limits from it, so they can never
  disagree.  Names carry the stack's namespace, so stacks sharing one NATS
  (``sgp-infra:async.natsUrl``) never share a queue.
* **The credentials of an existing NATS** (:func:`credentials_secret`,
  :func:`credentials_env`): with ``natsUrl``, the API and forwarder
  containers read ``SGP_INFRA_NATS_*`` from the Secret
  ``sgp-infra-nats-credentials`` (each key optional: a NATS without auth needs
  none, and ``sgp-infra:natsCredentials`` holds a token or a user and
  password).  Only the Secret's metadata is planned; its values come from the
  Pulumi secret in the component, never into a plain manifest.
* **The in-cluster NATS** (:func:`plan_nats`), planned when the catalogue has
  ASYNC models and no ``natsUrl``: a StatefulSet with JetStream file storage
  on a PVC per server, a headless Service (stable pod names for cluster routes
  and KEDA's per-server monitoring queries), a client Service, the
  ``nats.conf`` ConfigMap, a NetworkPolicy that admits only the stack's
  own clients and, with more than one server, a PodDisruptionBudget that
  keeps a quorum.

Pure functions of the catalogue: no I/O, no NATS client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..catalog import Catalog, ConfigError, Model, StackSettings, config_path
from ..catalog.nats_credentials import ENV_VARS
from .labels import (API_POD_SELECTOR, COMPONENT, INSTANCE, MANAGED_BY, MANAGED_BY_KEY, NAME, PART_OF, PART_OF_KEY,
                     TASK_WORKER_POD_SELECTOR)

NATS_NAME = "sgp-infra-nats"
NATS_HEADLESS = f"{NATS_NAME}-headless"
NATS_CONFIGMAP = f"{NATS_NAME}-config"
NATS_CONF_KEY = "nats.conf"
CLIENT_PORT = 4222
CLUSTER_PORT = 6222
MONITOR_PORT = 8222
STORE_DIR = "/data"
CONFIG_DIR = "/etc/nats"
PID_DIR = "/var/run/nats"
PID_FILE = f"{PID_DIR}/nats.pid"
#: Uid/gid the NATS server runs as (the official image's ``nats`` user needs none: any non-root id works).
NATS_RUN_AS = 1000
#: JetStream keeps this share of the volume for itself; the rest is headroom for compaction.
STORE_SHARE = 0.9
#: Most seconds beyond the task time limit before JetStream redelivers an unacknowledged task:
#: the forwarder's own call times out first, so a redelivery means the worker died.
ACK_WAIT_MARGIN_SECONDS = 30
#: The label KEDA's own Helm chart puts on its operator pods, which read the monitoring port for lag.
KEDA_OPERATOR_SELECTOR = {"app.kubernetes.io/name": "keda-operator"}
#: The Secret holding ``sgp-infra:natsCredentials`` (keys ``token``, or ``user`` and ``password``).
NATS_CREDENTIALS_SECRET = "sgp-infra-nats-credentials"


def ack_wait_seconds(task_timeout_seconds: int) -> int:
    """The task time limit plus a margin for recording the result (half the limit, 2 to 30 s)."""
    return task_timeout_seconds + min(ACK_WAIT_MARGIN_SECONDS, max(2, task_timeout_seconds // 2))


@dataclass(frozen=True)
class ModelQueue:
    """One ASYNC model's part of the layout."""

    model: str
    object_name: str
    account_id: str
    #: The model's subject: each task is published on ``<subject>.<task id>`` (:meth:`task_subject`).
    subject: str
    #: The durable pull consumer its forwarders share.
    consumer: str
    #: Tasks in flight across all its workers: ``per_worker × max_workers``.
    max_ack_pending: int
    #: Tasks one forwarder runs at once: ``per_worker``.
    per_worker: int
    ack_wait_seconds: int
    #: ``max_deliveries`` plus one: the extra delivery runs no model call, it records
    #: FAILURE for a task whose worker died on its last attempt (docs/async.md).
    max_deliver: int
    max_deliveries: int
    task_timeout_seconds: int
    result_ttl_seconds: int

    @property
    def filter_subject(self) -> str:
        """What the model's consumer takes: every task of the model."""
        return f"{self.subject}.*"

    def task_subject(self, task_id: str) -> str:
        """The subject one task is published on (task ids are UUIDs: one token, no wildcard)."""
        return f"{self.subject}.{task_id}"


@dataclass(frozen=True)
class TaskLayout:
    """The stack's JetStream objects: stream, bucket, and each ASYNC model's queue."""

    stream: str
    #: The stream's subjects (a wildcard over every model's subject).
    stream_subjects: tuple[str, ...]
    #: What every model's subject starts with (``sgp-infra.<namespace>.tasks``).
    subject_prefix: str
    bucket: str
    #: The bucket's TTL: the longest result retention of any ASYNC model (each model's own is
    #: enforced when a result is read).
    bucket_ttl_seconds: int
    #: Stream and bucket replication (R1 for dev, R3 in production).
    replicas: int
    queues: Mapping[str, ModelQueue] = field(default_factory=dict)

    def queue(self, model_name: str) -> Optional[ModelQueue]:
        return self.queues.get(model_name)

    def any_task_subject(self, task_id: str) -> str:
        """The subject that matches a task whatever its model's: read a queued task back by id."""
        return f"{self.subject_prefix}.*.{task_id}"


def subject_prefix(namespace: str) -> str:
    return f"sgp-infra.{namespace}.tasks"


def stream_name(namespace: str) -> str:
    """The stack's work-queue stream."""
    return f"sgp-infra-tasks-{namespace}"


def bucket_name(namespace: str) -> str:
    """The stack's key-value bucket of task records and results."""
    return f"sgp-infra-results-{namespace}"


def model_queue(model: Model, namespace: str) -> ModelQueue:
    """One model's subject, consumer and limits (see :class:`ModelQueue`)."""
    limits = model.async_tasks
    return ModelQueue(
        model=model.name, object_name=model.object_name, account_id=model.account_id,
        subject=f"{subject_prefix(namespace)}.{model.object_name}", consumer=model.object_name,
        max_ack_pending=max(1, model.per_worker * model.max_workers), per_worker=model.per_worker,
        ack_wait_seconds=ack_wait_seconds(limits.task_timeout_seconds),
        max_deliver=limits.max_deliveries + 1, max_deliveries=limits.max_deliveries,
        task_timeout_seconds=limits.task_timeout_seconds, result_ttl_seconds=limits.result_ttl_seconds,
    )


def stream_replicas(settings: StackSettings) -> int:
    """R3 at most: JetStream replicates a stream on up to 3 (or 5) servers; 3 is the production norm."""
    return min(settings.async_.replicas, 3)


def task_layout(catalog: Catalog) -> TaskLayout:
    """The one place names and limits of the stack's JetStream objects are decided."""
    ns = catalog.settings.namespace
    queues = {m.name: model_queue(m, ns) for m in sorted(catalog.models.values(), key=lambda m: m.name)
              if m.is_async}
    ttl = max((q.result_ttl_seconds for q in queues.values()), default=86400)
    return TaskLayout(
        stream=stream_name(ns), stream_subjects=(f"{subject_prefix(ns)}.>",), subject_prefix=subject_prefix(ns),
        bucket=bucket_name(ns), bucket_ttl_seconds=ttl, replicas=stream_replicas(catalog.settings),
        queues=queues,
    )


def has_async(catalog: Catalog) -> bool:
    return any(m.is_async for m in catalog.models.values())


def plans_in_cluster_nats(catalog: Catalog) -> bool:
    """An in-cluster NATS is planned when ASYNC models need one and no ``natsUrl`` names another."""
    return has_async(catalog) and not catalog.settings.async_.nats_url


def client_url(settings: StackSettings) -> str:
    """Where the API and the forwarders connect: ``natsUrl``, else the in-cluster Service."""
    if settings.async_.nats_url:
        return settings.async_.nats_url
    return f"nats://{NATS_NAME}.{settings.namespace}.svc.cluster.local:{CLIENT_PORT}"


def credentials_secret(namespace: str) -> dict[str, Any]:
    """The NATS credentials Secret's shape without its values (``stringData`` is added by the component)."""
    labels = {NAME: NATS_CREDENTIALS_SECRET, INSTANCE: NATS_CREDENTIALS_SECRET, COMPONENT: "broker-credentials",
              PART_OF_KEY: PART_OF, MANAGED_BY_KEY: MANAGED_BY}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": NATS_CREDENTIALS_SECRET, "namespace": namespace, "labels": labels}}


def credentials_env(settings: StackSettings) -> list[dict[str, Any]]:
    """The ``SGP_INFRA_NATS_*`` env entries of the API and forwarder containers (none without ``natsUrl``).

    Every key is ``optional``: the Secret exists only when
    ``sgp-infra:natsCredentials`` is set, and holds either ``token`` or
    ``user``/``password``; the client uses what it finds
    (``sgp_infra/tasks/auth.py``).  So the manifests do not depend on the
    secret's shape, and ``render`` plans the same Deployments as ``pulumi up``.
    """
    if not settings.async_.nats_url:
        return []
    return [{"name": var, "valueFrom": {"secretKeyRef": {"name": NATS_CREDENTIALS_SECRET, "key": key,
                                                         "optional": True}}}
            for key, var in ENV_VARS.items()]


def monitoring_endpoint(settings: StackSettings) -> Optional[str]:
    """host:port KEDA's nats-jetstream scaler reads lag from.

    The headless Service: in a cluster KEDA asks the consumer's leader by
    ``<server name>.<endpoint>``, and server names are the pod names, which
    resolve under the headless Service.
    """
    if settings.async_.nats_url:
        return settings.async_.monitoring_endpoint
    return f"{NATS_HEADLESS}.{settings.namespace}.svc.cluster.local:{MONITOR_PORT}"


def check(catalog: Catalog) -> list[ConfigError]:
    """Broker rules that cannot hold: settings that would be silently ignored, a scaler with no endpoint."""
    errors: list[ConfigError] = []
    settings = catalog.settings.async_
    if settings.nats_url:
        for key in ("image", "storage", "storage_class_name"):
            if key in settings.model_fields_set:
                alias = type(settings).model_fields[key].alias or key
                errors.append(ConfigError(
                    config_path("async", alias),
                    "configures the in-cluster NATS, which is not planned when natsUrl names an existing one; "
                    "remove it or remove natsUrl"))
        scaled = [m for m in catalog.models.values() if m.is_async and m.max_workers > m.min_workers]
        if scaled and not settings.monitoring_endpoint and catalog.settings.autoscaler == "keda":
            errors.append(ConfigError(
                config_path("async", "monitoringEndpoint"),
                f"is required with natsUrl: KEDA scales ASYNC model '{scaled[0].name}' on its queue and reads "
                "the lag from the NATS monitoring endpoint (host:8222)"))
    return errors


# --- the in-cluster NATS ------------------------------------------------------------------------


def nats_labels() -> dict[str, str]:
    return {NAME: NATS_NAME, INSTANCE: NATS_NAME, COMPONENT: "broker", PART_OF_KEY: PART_OF,
            MANAGED_BY_KEY: MANAGED_BY}


def nats_selector() -> dict[str, str]:
    return {INSTANCE: NATS_NAME, COMPONENT: "broker", PART_OF_KEY: PART_OF}


def _meta(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": nats_labels()}


def _bytes(quantity: str) -> int:
    from ..catalog.quantity import parse_quantity

    return int(parse_quantity(quantity))


def nats_conf(settings: StackSettings) -> str:
    """``nats.conf``: JetStream on the PVC, monitoring on 8222, cluster routes when replicated.

    ``$POD_NAME`` is read from the environment by the server: each server is
    named after its pod, which KEDA relies on (see :func:`monitoring_endpoint`).
    """
    a = settings.async_
    store = int(_bytes(a.storage) * STORE_SHARE)
    lines = [
        "server_name: $POD_NAME",
        f"pid_file: {PID_FILE}",
        f"listen: 0.0.0.0:{CLIENT_PORT}",
        f"http: 0.0.0.0:{MONITOR_PORT}",
        "lame_duck_grace_period: 10s",
        "lame_duck_duration: 30s",
        "jetstream {",
        f"  store_dir: {STORE_DIR}",
        "  max_memory_store: 64MB",
        f"  max_file_store: {store}",
        "}",
    ]
    if a.replicas > 1:
        routes = ", ".join(
            f"nats://{NATS_NAME}-{i}.{NATS_HEADLESS}.{settings.namespace}.svc.cluster.local:{CLUSTER_PORT}"
            for i in range(a.replicas))
        lines += [
            "cluster {",
            f"  name: {NATS_NAME}",
            f"  listen: 0.0.0.0:{CLUSTER_PORT}",
            f"  routes: [{routes}]",
            "}",
        ]
    return "\n".join(lines) + "\n"


def config_map(settings: StackSettings) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(NATS_CONFIGMAP, settings.namespace),
            "data": {NATS_CONF_KEY: nats_conf(settings)}}


def _ports(cluster: bool) -> list[dict[str, Any]]:
    ports = [{"name": "client", "port": CLIENT_PORT, "targetPort": "client", "protocol": "TCP"},
             {"name": "monitor", "port": MONITOR_PORT, "targetPort": "monitor", "protocol": "TCP"}]
    if cluster:
        ports.append({"name": "cluster", "port": CLUSTER_PORT, "targetPort": "cluster", "protocol": "TCP"})
    return ports


def services(settings: StackSettings) -> list[dict[str, Any]]:
    """The client Service and the headless one (stable pod DNS; not-ready pods too, so routes form)."""
    ns = settings.namespace
    headless = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(NATS_HEADLESS, ns),
                "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": nats_selector(),
                         "ports": _ports(cluster=settings.async_.replicas > 1)}}
    client = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(NATS_NAME, ns),
              "spec": {"type": "ClusterIP", "selector": nats_selector(), "ports": _ports(cluster=False)}}
    return [headless, client]


def container(settings: StackSettings) -> dict[str, Any]:
    a = settings.async_
    health = {"port": "monitor"}
    container_ports = [{"name": "client", "containerPort": CLIENT_PORT, "protocol": "TCP"},
                       {"name": "monitor", "containerPort": MONITOR_PORT, "protocol": "TCP"}]
    if a.replicas > 1:
        container_ports.append({"name": "cluster", "containerPort": CLUSTER_PORT, "protocol": "TCP"})
    return {
        "name": "nats",
        "image": a.image,
        "args": ["--config", f"{CONFIG_DIR}/{NATS_CONF_KEY}"],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": container_ports,
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        # Healthy once the server answers; ready only once JetStream is up (and, clustered, current).
        "startupProbe": {"httpGet": {**health, "path": "/healthz"}, "periodSeconds": 5, "failureThreshold": 60},
        "readinessProbe": {"httpGet": {**health, "path": "/healthz?js-enabled-only=true"}, "periodSeconds": 10,
                           "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {**health, "path": "/healthz?js-enabled-only=true"}, "periodSeconds": 30,
                          "timeoutSeconds": 5, "failureThreshold": 3},
        # Lame-duck mode moves clients to the other servers before this one stops.
        "lifecycle": {"preStop": {"exec": {"command": ["nats-server", f"-sl=ldm={PID_FILE}"]}}},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": NATS_RUN_AS, "runAsGroup": NATS_RUN_AS,
            "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "data", "mountPath": STORE_DIR},
                         {"name": "pid", "mountPath": PID_DIR}],
    }


def stateful_set(settings: StackSettings) -> dict[str, Any]:
    a = settings.async_
    claim_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": a.storage}}}
    if a.storage_class_name:
        claim_spec["storageClassName"] = a.storage_class_name
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(NATS_NAME, settings.namespace),
        "spec": {
            "replicas": a.replicas,
            "serviceName": NATS_HEADLESS,
            # All servers start together: a cluster needs its peers to elect leaders.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": nats_selector()},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": nats_labels()},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": NATS_RUN_AS, "runAsGroup": NATS_RUN_AS,
                                        "fsGroup": NATS_RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container(settings)],
                    "volumes": [{"name": "config", "configMap": {"name": NATS_CONFIGMAP}},
                                {"name": "pid", "emptyDir": {"sizeLimit": "1Mi"}}],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": nats_labels()}, "spec": claim_spec}],
        },
    }


def pdb(settings: StackSettings) -> dict[str, Any]:
    """One server down at a time keeps an R3 stream's quorum."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(NATS_NAME, settings.namespace),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": nats_selector()}}}


def network_policy(settings: StackSettings) -> dict[str, Any]:
    """Who may reach the broker: least privilege for a server that has no auth of its own.

    * the client port, from the API pods (publish, results) and the ASYNC
      model pods (their forwarder sidecars) of this stack only: a SYNC or
      STREAMING model's image never needs the broker, and the broker has no
      auth to keep it from other accounts' tasks;
    * the cluster port, from the other NATS servers, when clustered;
    * the monitoring port, from KEDA's operator in any namespace (it reads the
      consumer lag there), matched by the label KEDA's chart sets.
    """
    ingress: list[dict[str, Any]] = [
        {"from": [{"podSelector": {"matchLabels": dict(API_POD_SELECTOR)}},
                  {"podSelector": {"matchLabels": dict(TASK_WORKER_POD_SELECTOR)}}],
         "ports": [{"protocol": "TCP", "port": CLIENT_PORT}]},
        {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": dict(KEDA_OPERATOR_SELECTOR)}}],
         "ports": [{"protocol": "TCP", "port": MONITOR_PORT}]},
    ]
    if settings.async_.replicas > 1:
        ingress.append({"from": [{"podSelector": {"matchLabels": nats_selector()}}],
                        "ports": [{"protocol": "TCP", "port": CLUSTER_PORT}]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(NATS_NAME, settings.namespace),
            "spec": {"podSelector": {"matchLabels": nats_selector()}, "policyTypes": ["Ingress"],
                     "ingress": ingress}}


def plan_nats(catalog: Catalog) -> list[dict[str, Any]]:
    """The in-cluster NATS's objects in apply order, or nothing (no ASYNC model, or ``natsUrl``)."""
    if not plans_in_cluster_nats(catalog):
        return []
    settings = catalog.settings
    out = [config_map(settings), *services(settings), network_policy(settings), stateful_set(settings)]
    if settings.async_.replicas > 1:
        out.append(pdb(settings))
    return out
