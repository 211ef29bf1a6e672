"""The catalogue API's objects, planned as plain manifests (no Pulumi).

One Deployment (``settings.api.replicas``, 2 by default) under the restricted
Pod Security Standard, its Service, the published catalogue ConfigMap, a
ServiceAccount whose Role only lists model Deployments and pods, lists and
watches EndpointSlices and gets the catalogue ConfigMap in the namespace, a
NetworkPolicy admitting only the API port, a PodDisruptionBudget, and, when
``sgp-infra:api.ingress`` asks for one, an HTTPRoute or Ingress (``ingress``).
The container runs ``serve`` with ``sgp-infra:api.workers`` and every
``sgp-infra:api.limits`` value as flags; its CPU and memory scale with the
workers unless ``sgp-infra:api.resources`` sets them.

The pod template carries a checksum of the published catalogue, so a catalogue
change rolls the API pods.  The API keys Secret is *not* planned with a value:
keys are a Pulumi secret, and plain manifests (``render``, outputs) must never
hold them.  :func:`api_keys_secret` gives its metadata; the component adds the
value from ``sgp-infra:apiKeys``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

from ..catalog import Catalog
from ..catalog.settings import SERVE_LIMIT_FLAGS
from .ingress import plan_ingress
from .labels import COMPONENT, INSTANCE, MANAGED_BY, MANAGED_BY_KEY, NAME, PART_OF, PART_OF_KEY
from .nats import credentials_env, has_async
from .service import in_cluster_url

API_NAME = "sgp-infra-api"
CATALOG_CONFIGMAP = "sgp-infra-catalog"
CATALOG_KEY = "catalog.json"
API_KEYS_SECRET = "sgp-infra-api-keys"
API_KEYS_KEY = "api-keys.json"
API_PORT = 8080
API_PORT_NAME = "http"
CATALOG_MOUNT = "/etc/sgp-infra"
CHECKSUM_ANNOTATION = "sgp-infra.io/catalog-checksum"
RUN_AS = 10001
#: The stack the catalogue comes from, passed to the API container: its 405
#: answers name ``stacks/Pulumi.<stack>.yaml`` and ``--stack <stack>``.
STACK_ENV = "SGP_INFRA_STACK"


def api_labels() -> dict[str, str]:
    return {NAME: API_NAME, INSTANCE: API_NAME, COMPONENT: "api", PART_OF_KEY: PART_OF, MANAGED_BY_KEY: MANAGED_BY}


def api_selector() -> dict[str, str]:
    """Immutable Deployment selector; also matches the NetworkPolicy's API pod selector."""
    return {INSTANCE: API_NAME, COMPONENT: "api", PART_OF_KEY: PART_OF}


def _meta(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": api_labels()}


def catalog_document(catalog: Catalog) -> str:
    """The published catalogue: the stack document the API rebuilds with ``build_catalog``.

    Compact JSON with sorted keys, so it is deterministic and its checksum
    moves only when the catalogue does.  JSON rather than YAML because this
    document is written for a program (the API reads it with ``json``), and
    serialising a thousand-model catalogue as YAML took ~0.2 s of every
    ``pulumi up`` and ``render`` where JSON takes a few milliseconds.  Values
    JSON has no type for (a YAML date in a hand-written stack file) are
    published as their text, as Pulumi itself passes config to a program.
    :func:`plan_api` computes it once for both the ConfigMap and the checksum.
    """
    return json.dumps(catalog.stack_document(), sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)


def document_checksum(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def catalog_checksum(catalog: Catalog) -> str:
    return document_checksum(catalog_document(catalog))


def config_map(catalog: Catalog, document: Optional[str] = None) -> dict[str, Any]:
    text = catalog_document(catalog) if document is None else document
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(CATALOG_CONFIGMAP, catalog.settings.namespace),
            "data": {CATALOG_KEY: text}}


def api_keys_secret(namespace: str) -> dict[str, Any]:
    """The Secret's shape without its value (``stringData`` is added by the component)."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(API_KEYS_SECRET, namespace), "type": "Opaque"}


def service_account(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(API_NAME, namespace)}


def role(namespace: str) -> dict[str, Any]:
    """Exactly the reads the API makes, nothing more (least privilege).

    ``api/kube_status.py`` lists model Deployments and pods and gets the
    catalogue ConfigMap; ``api/inference/endpoints.py`` lists and watches
    EndpointSlices.  No write verb, no ``get`` where only lists are made, and
    no ReplicaSets or Secrets.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(API_NAME, namespace),
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            # the inference routing's pod addresses (api/inference/endpoints.py)
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CATALOG_CONFIGMAP], "verbs": ["get"]},
        ],
    }


def role_binding(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(API_NAME, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": API_NAME},
        "subjects": [{"kind": "ServiceAccount", "name": API_NAME, "namespace": namespace}],
    }


#: Per worker process: what the API container requests, and at most uses, unless ``sgp-infra:api.resources`` says.
PER_WORKER = {"requests": {"cpu": 250, "memory": 256}, "limits": {"cpu": 1000, "memory": 512}}  # millicores, MiB


def serve_args(catalog: Catalog) -> list[str]:
    """The API container's ``serve`` command line: the catalogue, the workers and every client limit."""
    api = catalog.settings.api
    args = ["serve", "--config-file", f"{CATALOG_MOUNT}/{CATALOG_KEY}", "--host", "0.0.0.0",
            "--port", str(API_PORT), "--status", "kubernetes", "--workers", str(api.workers)]
    for field, flag in SERVE_LIMIT_FLAGS.items():
        value = getattr(api.limits, field)
        args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return args


def resources(catalog: Catalog) -> dict[str, Any]:
    """The API container's requests and limits: ``sgp-infra:api.resources``, else :data:`PER_WORKER` × workers."""
    api = catalog.settings.api
    out: dict[str, Any] = {}
    for kind in ("requests", "limits"):
        given = getattr(api.resources, kind)
        cpu = PER_WORKER[kind]["cpu"] * api.workers
        memory = PER_WORKER[kind]["memory"] * api.workers
        out[kind] = {"cpu": given.cpu or (f"{cpu // 1000}" if cpu % 1000 == 0 else f"{cpu}m"),
                     "memory": given.memory or f"{memory}Mi"}
    return out


def container(catalog: Catalog, stack: Optional[str] = None) -> dict[str, Any]:
    http = {"path": "/healthz", "port": API_PORT_NAME}
    stack_env = [{"name": STACK_ENV, "value": stack}] if stack else []
    # ASYNC models on an existing NATS (natsUrl): its credentials, by reference (plan/nats.py).
    nats_env = credentials_env(catalog.settings) if has_async(catalog) else []
    return {
        "name": "api",
        "image": catalog.settings.api.image,
        "args": serve_args(catalog),
        "ports": [{"name": API_PORT_NAME, "containerPort": API_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "SGP_INFRA_API_KEYS",
             "valueFrom": {"secretKeyRef": {"name": API_KEYS_SECRET, "key": API_KEYS_KEY, "optional": True}}},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            *stack_env,
            *nats_env,
        ],
        "resources": resources(catalog),
        "readinessProbe": {"httpGet": {**http, "path": "/readyz"}, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": dict(http), "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 2},
        "startupProbe": {"httpGet": dict(http), "periodSeconds": 2, "failureThreshold": 30},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
            "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "catalog", "mountPath": CATALOG_MOUNT, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }


def deployment(catalog: Catalog, checksum: Optional[str] = None, stack: Optional[str] = None) -> dict[str, Any]:
    ns = catalog.settings.namespace
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(API_NAME, ns),
        "spec": {
            "replicas": catalog.settings.api.replicas,
            "selector": {"matchLabels": api_selector()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": api_labels(),
                    "annotations": {CHECKSUM_ANNOTATION: checksum or catalog_checksum(catalog),
                                    "prometheus.io/scrape": "true", "prometheus.io/port": str(API_PORT),
                                    "prometheus.io/path": "/metrics"},
                },
                "spec": {
                    "serviceAccountName": API_NAME,
                    "automountServiceAccountToken": True,  # it reads Deployments
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container(catalog, stack)],
                    "volumes": [{"name": "catalog", "configMap": {"name": CATALOG_CONFIGMAP}},
                                # /tmp also holds prometheus_client's per-worker metric files (--workers)
                                {"name": "tmp",
                                 "emptyDir": {"sizeLimit": f"{64 + 16 * catalog.settings.api.workers}Mi"}}],
                },
            },
        },
    }


def api_url(namespace: str) -> str:
    """The API Service's in-cluster URL."""
    return in_cluster_url(API_NAME, namespace)


def service(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(API_NAME, namespace),
            "spec": {"selector": api_selector(), "type": "ClusterIP",
                     "ports": [{"name": API_PORT_NAME, "port": 80, "targetPort": API_PORT_NAME, "protocol": "TCP"}]}}


def network_policy(namespace: str) -> dict[str, Any]:
    """The API pods take traffic on the API port only.

    From any source: the ingress controller or Gateway in front of it, in-cluster
    clients and Prometheus (which scrapes ``/metrics`` on the same port) live in
    namespaces this stack does not know.  The policy still matters: every pod the
    stack runs is selected by a NetworkPolicy, so nothing else a future version
    (or a debug sidecar) listens on is reachable by default.
    """
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(API_NAME, namespace),
            "spec": {"podSelector": {"matchLabels": api_selector()}, "policyTypes": ["Ingress"],
                     "ingress": [{"ports": [{"protocol": "TCP", "port": API_PORT}]}]}}


def pdb(namespace: str) -> dict[str, Any]:
    # maxUnavailable rather than minAvailable: a single replica still drains.
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(API_NAME, namespace),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": api_selector()}}}


def plan_api(catalog: Catalog, stack: Optional[str] = None) -> list[dict[str, Any]]:
    """The API's objects in apply order (the keys Secret excluded; see module doc).

    ``stack``, the stack the catalogue comes from, is passed to the container
    (``SGP_INFRA_STACK``) so write answers name its file and ``--stack`` flag.
    """
    ns = catalog.settings.namespace
    document = catalog_document(catalog)  # serialised once: the ConfigMap's data and the checksum
    return [service_account(ns), role(ns), role_binding(ns), config_map(catalog, document),
            deployment(catalog, document_checksum(document), stack), service(ns), network_policy(ns), pdb(ns),
            *plan_ingress(catalog, _meta(API_NAME, ns), API_NAME, 80)]
