"""Model status from the cluster, for the API running in a pod.

Lists the model Deployments and pods of the namespace (label
``app.kubernetes.io/component=model``, ``part-of=sgp-infra``) with the API's
service account, whose Role grants only ``list`` on deployments and pods,
``list/watch`` on endpointslices and ``get`` on the catalogue ConfigMap
there.  Objects are converted to the JSON kubectl prints and mapped by
:func:`~sgp_infra.api.status.status_from_deployment`, the same
function the recorded-object tests exercise.  The namespace's catalogue
ConfigMap gives templates and groups a ``created_at`` when no model does.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Optional

from ..plan.labels import COMPONENT, INSTANCE, MODEL_NAME, PART_OF, PART_OF_KEY
from .status import CachedStatus, ModelStatus, status_from_deployment

MODEL_SELECTOR = f"{PART_OF_KEY}={PART_OF},{COMPONENT}=model"
CATALOG_CONFIGMAP = "sgp-infra-catalog"


def model_key(obj: dict[str, Any]) -> Optional[str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MODEL_NAME) or labels.get(INSTANCE)


def statuses_from_objects(deployments: list[dict[str, Any]], pods: list[dict[str, Any]]) -> dict[str, ModelStatus]:
    """Status per model object name from listed Deployments and pods (kubectl JSON)."""
    pods_by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pod in pods:
        key = model_key(pod)
        if key:
            pods_by_model[key].append(pod)
    out = {}
    for dep in deployments:
        key = model_key(dep) or (dep.get("metadata") or {}).get("name")
        if key:
            out[key] = status_from_deployment(dep, pods_by_model.get(key, ()))
    return out


def kubectl_json(api: Any, obj: Any) -> dict[str, Any]:
    """A client object as the JSON kubectl prints.

    The client turns timestamps into ``datetime``s and serialises them back as
    ``+00:00``; the API server (and the SGP API) write ``Z``, which is what the
    recorded objects and ``created_at`` use.
    """
    out: dict[str, Any] = api.sanitize_for_serialization(obj)
    meta = out.get("metadata") or {}
    stamp = meta.get("creationTimestamp")
    if isinstance(stamp, str) and stamp.endswith("+00:00"):
        meta["creationTimestamp"] = stamp[: -len("+00:00")] + "Z"
    return out


class KubeStatus(CachedStatus):
    initial_reason = "reading model Deployments from the cluster"
    missing_reason = "no Deployment in the cluster yet (pulumi up has not created it)"

    def __init__(self, namespace: str, *, interval: float = 10.0, configuration: Any = None):
        """``configuration`` (a ``kubernetes_asyncio.client.Configuration``) is
        for talking to an API server other than the pod's own; by default the
        in-cluster service-account config is loaded."""
        super().__init__(interval)
        self.namespace = namespace
        self.configuration = configuration
        self._api_client: Any = None

    async def _client(self) -> Any:
        if self._api_client is None:
            from kubernetes_asyncio import client, config

            if self.configuration is None:
                config.load_incluster_config()
            self._api_client = client.ApiClient(self.configuration)
        return self._api_client

    async def refresh(self) -> dict[str, ModelStatus]:
        from kubernetes_asyncio import client

        api = await self._client()
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        deps = await apps.list_namespaced_deployment(self.namespace, label_selector=MODEL_SELECTOR,
                                                     _request_timeout=10)
        pods = await core.list_namespaced_pod(self.namespace, label_selector=MODEL_SELECTOR, _request_timeout=10)
        if self._catalog_created_at is None:
            try:
                cm = await core.read_namespaced_config_map(CATALOG_CONFIGMAP, self.namespace, _request_timeout=10)
                self._catalog_created_at = kubectl_json(api, cm)["metadata"].get("creationTimestamp")
            except Exception:  # noqa: BLE001 - optional; the Role may not grant configmaps
                pass
        return statuses_from_objects([kubectl_json(api, d) for d in deps.items],
                                     [kubectl_json(api, p) for p in pods.items])

    async def stop(self) -> None:
        await super().stop()
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = None
