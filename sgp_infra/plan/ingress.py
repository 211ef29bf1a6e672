"""The API behind the cluster's ingress: a Gateway API HTTPRoute or a ``networking.k8s.io/v1`` Ingress.

Planned only when ``sgp-infra:api.ingress`` is set, pointing at the API
Service.  The ingress gets limits no looser than the API's own, so an
oversized or slow request is stopped at the edge, and the API still enforces
every limit itself (docs/api.md has the table):

* **Ingress** (ingress-nginx annotations): ``proxy-body-size`` is the API's
  body limit; ``proxy-read-timeout``/``proxy-send-timeout`` the longest gap
  on the proxied connection; ``proxy-buffering: off`` so streamed answers
  flow as they are produced.  ingress-nginx sizes request-header buffers
  controller-wide only (ConfigMap ``large-client-header-buffers``, 4 × 8k by
  default, already within the API's 16 KiB head limit).
* **HTTPRoute**: ``timeouts.request`` bounds a whole request, streams
  included (Extended support).  The Gateway API has no portable body or
  header limit: those are the Gateway implementation's policies, and the
  API's own limits hold either way.
"""

from __future__ import annotations

from typing import Any

from ..catalog import Catalog
from ..catalog.settings import ApiIngress

#: The ingress-nginx annotation prefix.
NGINX = "nginx.ingress.kubernetes.io"


def nginx_size(size: int) -> str:
    """Bytes in nginx's size syntax: whole mebibytes as ``16m``, whole kibibytes as ``64k``, else bytes."""
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)}m"
    if size % 1024 == 0:
        return f"{size // 1024}k"
    return str(size)


def duration(seconds: int) -> str:
    """Seconds as a Gateway API duration (GEP-2257): ``1h``, ``330s``."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def plan_ingress(catalog: Catalog, meta: dict[str, Any], service: str, port: int) -> list[dict[str, Any]]:
    """The ingress object of ``sgp-infra:api.ingress`` for the API Service ``service:port`` (none when unset).

    ``meta`` is the API's object metadata (name, namespace, labels).
    """
    spec = catalog.settings.api.ingress
    if spec is None:
        return []
    if spec.kind == "httproute":
        return [http_route(spec, meta, service, port)]
    return [ingress(spec, catalog.settings.api.limits.max_body_bytes, meta, service, port)]


def http_route(spec: ApiIngress, meta: dict[str, Any], service: str, port: int) -> dict[str, Any]:
    assert spec.gateway_ref is not None  # the settings model requires it for this kind
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": spec.gateway_ref.name}
    if spec.gateway_ref.namespace:
        parent["namespace"] = spec.gateway_ref.namespace
    if spec.gateway_ref.section_name:
        parent["sectionName"] = spec.gateway_ref.section_name
    route: dict[str, Any] = {
        "parentRefs": [parent],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": spec.path}}],
            "backendRefs": [{"group": "", "kind": "Service", "name": service, "port": port}],
            "timeouts": {"request": duration(spec.request_timeout_seconds)},
        }],
    }
    if spec.host:
        route["hostnames"] = [spec.host]
    metadata = {**meta, "annotations": dict(spec.annotations)} if spec.annotations else dict(meta)
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": metadata, "spec": route}


def ingress(spec: ApiIngress, max_body_bytes: int, meta: dict[str, Any], service: str, port: int) -> dict[str, Any]:
    timeout = str(spec.read_timeout_seconds)
    annotations = {
        **spec.annotations,
        f"{NGINX}/proxy-body-size": nginx_size(max_body_bytes),
        f"{NGINX}/proxy-read-timeout": timeout,
        f"{NGINX}/proxy-send-timeout": timeout,
        f"{NGINX}/proxy-buffering": "off",
    }
    rule: dict[str, Any] = {"http": {"paths": [{
        "path": spec.path, "pathType": "Prefix",
        "backend": {"service": {"name": service, "port": {"number": port}}},
    }]}}
    if spec.host:
        rule["host"] = spec.host
    body: dict[str, Any] = {"rules": [rule]}
    if spec.class_name:
        body["ingressClassName"] = spec.class_name
    if spec.tls_secret_name:
        body["tls"] = [{"hosts": [spec.host], "secretName": spec.tls_secret_name}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {**meta, "annotations": annotations},
            "spec": body}
