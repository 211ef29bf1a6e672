"""The checks of the sgp-infra CrossGuard policy pack, as plain functions.

Each check takes Kubernetes manifests as plain dicts (camelCase, as ``kubectl``
and the planner spell them) and returns a list of problems, one string each;
an empty list means the check passes.  ``__main__.py`` wraps them as
CrossGuard policies; the unit tests run them on the planner's own manifests.

Mandatory (a violation blocks ``pulumi up``):

* every workload container has CPU and memory limits;
* a pod that asks for a GPU resource selects GPU nodes, and a pod that selects
  GPU nodes asks for a GPU (and MIG slices match the selected slice);
* every image is pinned: a tag that is not ``latest``, or a digest;
* the API pods meet the *restricted* Pod Security Standard (and a read-only
  root filesystem).

Advisory (reported, not blocking):

* GPUs per type at max scale stay within a per-stack quota;
* high-priority models keep at least one worker (no scale to zero);
* an ASYNC model that can scale to zero sets its task time limit
  (``async_tasks.task_timeout_seconds``, on the model or its template): its
  tasks wait for a cold start, and the limit is what bounds how long a worker
  may hold one.

This module imports nothing outside the standard library, so the pack runs
wherever ``pulumi-policy`` does.  When ``sgp_infra`` is importable, its GPU
profiles name the GPU type of a node selector for every built-in profile;
otherwise the EKS label's value (the SGP ``gpu_type`` verbatim) is used.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Iterable, Mapping, Optional, Sequence

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})

#: Node labels that select GPU nodes, one per GPU profile of the planner.
GPU_NODE_LABEL_KEYS: tuple[str, ...] = (
    "k8s.amazonaws.com/accelerator",  # eks (Launch's convention)
    "cloud.google.com/gke-accelerator",  # gke
    "karpenter.k8s.aws/instance-gpu-name",  # karpenter
    "nvidia.com/gpu.product",  # nfd / GPU operator
)
EKS_KEY, GKE_KEY = GPU_NODE_LABEL_KEYS[0], GPU_NODE_LABEL_KEYS[1]
GKE_PARTITION_KEY = "cloud.google.com/gke-gpu-partition-size"

#: The planner's PriorityClass for ``high_priority`` models.
HIGH_PRIORITY_CLASSES: tuple[str, ...] = ("sgp-infra-high-priority",)

#: Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
})
_MIG = re.compile(r"^nvidia\.com/mig-(\d+)g\.(\d+)gb$")
_MIG_TYPE = re.compile(r"-(\d+)g(\d+)gb$")


# -- manifest helpers ---------------------------------------------------------


def pod_spec(manifest: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The pod spec of a workload manifest (``spec.template.spec``), else ``None``."""
    if manifest.get("kind") not in WORKLOAD_KINDS:
        return None
    spec = ((manifest.get("spec") or {}).get("template") or {}).get("spec")
    return spec if isinstance(spec, Mapping) else None


def pod_labels(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    return (((manifest.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def all_containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]


def describe(manifest: Mapping[str, Any]) -> str:
    meta = manifest.get("metadata") or {}
    where = f"{meta.get('namespace')}/" if meta.get("namespace") else ""
    return f"{manifest.get('kind', '?')} {where}{meta.get('name', '?')}"


def is_gpu_resource(name: str) -> bool:
    return name in ("nvidia.com/gpu", "amd.com/gpu") or name.startswith("nvidia.com/mig-")


def gpu_resources(container: Mapping[str, Any], part: str = "limits") -> dict[str, str]:
    values = ((container.get("resources") or {}).get(part)) or {}
    return {k: str(v) for k, v in values.items() if is_gpu_resource(k)}


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


# -- mandatory ----------------------------------------------------------------


def check_resource_limits(manifest: Mapping[str, Any]) -> list[str]:
    """Every container of a workload has CPU and memory limits."""
    pod = pod_spec(manifest)
    if pod is None:
        return []
    out = []
    for c in all_containers(pod):
        limits = (c.get("resources") or {}).get("limits") or {}
        missing = [r for r in ("cpu", "memory") if r not in limits]
        if missing:
            out.append(f"{describe(manifest)}: container '{c.get('name')}' has no {' or '.join(missing)} limit; "
                       "set resources.limits so one model cannot starve a node")
    return out


def check_gpu_node_selector(manifest: Mapping[str, Any],
                            gpu_label_keys: Sequence[str] = GPU_NODE_LABEL_KEYS) -> list[str]:
    """The GPU resource a pod asks for matches the GPU nodes it selects."""
    pod = pod_spec(manifest)
    if pod is None:
        return []
    selector = pod.get("nodeSelector") or {}
    gpu_keys = [k for k in selector if k in gpu_label_keys]
    requested: dict[str, str] = {}
    out = []
    for c in all_containers(pod):
        limits, requests = gpu_resources(c, "limits"), gpu_resources(c, "requests")
        for res, count in requests.items():
            if limits.get(res) != count:
                out.append(f"{describe(manifest)}: container '{c.get('name')}' requests {count} {res} but its "
                           f"limit is {limits.get(res, 'unset')}; GPU requests must equal limits")
        requested.update(limits)
    if requested and not gpu_keys:
        out.append(f"{describe(manifest)}: asks for {', '.join(sorted(requested))} but its nodeSelector names no GPU "
                   f"node label ({', '.join(gpu_label_keys)}); the pod would wait for any GPU node, or forever")
    if gpu_keys and not requested:
        out.append(f"{describe(manifest)}: selects GPU nodes ({', '.join(gpu_keys)}) but asks for no GPU resource; "
                   "it would hold a GPU node without using its GPU")
    for res in requested:
        mig = _MIG.match(res)
        eks_value = str(selector.get(EKS_KEY, ""))
        slice_in_value = _MIG_TYPE.search(eks_value)
        if mig and eks_value and (not slice_in_value or slice_in_value.groups() != mig.groups()):
            out.append(f"{describe(manifest)}: asks for MIG slice {res} but selects {EKS_KEY}={eks_value}")
        # (nvidia.com/gpu on a MIG-labelled EKS node is Launch's convention: the
        # device plugin's "single" MIG strategy exposes each slice as a GPU.)
        partition = selector.get(GKE_PARTITION_KEY)
        if partition and (not mig or partition != f"{mig.group(1)}g.{mig.group(2)}gb"):
            out.append(f"{describe(manifest)}: selects GKE partition {partition} but asks for {res}")
    return out


def image_problem(image: Any) -> Optional[str]:
    """Why an image reference is not pinned, or ``None``."""
    if not isinstance(image, str) or not image:
        return "has no image"
    if "@" in image:
        digest = image.split("@", 1)[1]
        return None if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else f"image {image} has a malformed digest"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image} has no tag (it means :latest); pin a version tag or a digest"
    tag = last.split(":", 1)[1]
    if not tag or tag == "latest":
        return f"image {image} uses the moving tag 'latest'; pin a version tag or a digest"
    return None


def check_image_pinned(manifest: Mapping[str, Any]) -> list[str]:
    """Every container image names a tag other than ``latest``, or a digest."""
    pod = pod_spec(manifest)
    if pod is None:
        return []
    out = []
    for c in all_containers(pod):
        problem = image_problem(c.get("image"))
        if problem:
            out.append(f"{describe(manifest)}: container '{c.get('name')}' {problem}")
    return out


def is_api_workload(manifest: Mapping[str, Any]) -> bool:
    """The sgp-infra API's pods (the documented API pod selector)."""
    labels = pod_labels(manifest)
    return (pod_spec(manifest) is not None and labels.get("app.kubernetes.io/part-of") == "sgp-infra"
            and labels.get("app.kubernetes.io/component") == "api")


def check_api_restricted(manifest: Mapping[str, Any]) -> list[str]:
    """API pods meet the restricted Pod Security Standard, plus a read-only root."""
    if not is_api_workload(manifest):
        return []
    pod = pod_spec(manifest) or {}
    who = describe(manifest)
    out = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"{who}: {key} must not be set")
    for vol in pod.get("volumes") or []:
        kinds = [k for k in vol if k != "name"]
        bad = [k for k in kinds if k not in RESTRICTED_VOLUME_TYPES]
        if bad:
            out.append(f"{who}: volume '{vol.get('name')}' is of type {bad[0]}, not allowed by the restricted profile")
    pod_sc = pod.get("securityContext") or {}
    for c in all_containers(pod):
        sc = c.get("securityContext") or {}
        name = f"{who}: container '{c.get('name')}'"
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser must not be 0 (root)")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile.type must be RuntimeDefault or Localhost")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        if sc.get("privileged"):
            out.append(f"{name}: must not be privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities.drop must include ALL")
        extra = [cap for cap in caps.get("add") or [] if cap != "NET_BIND_SERVICE"]
        if extra:
            out.append(f"{name}: may add only NET_BIND_SERVICE, not {', '.join(extra)}")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{name}: readOnlyRootFilesystem must be true")
    return out


MANDATORY_CHECKS = (check_resource_limits, check_gpu_node_selector, check_image_pinned, check_api_restricted)


# -- advisory (whole stack) ---------------------------------------------------


def _scalers(manifests: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, Any], Mapping[str, Any]]:
    """(namespace, Deployment name) → the ScaledObject or HPA that scales it."""
    out = {}
    for m in manifests:
        if m.get("kind") in ("ScaledObject", "HorizontalPodAutoscaler"):
            target = (m.get("spec") or {}).get("scaleTargetRef") or {}
            if target.get("kind", "Deployment") == "Deployment":
                out[((m.get("metadata") or {}).get("namespace"), target.get("name"))] = m
    return out


def replica_bounds(manifest: Mapping[str, Any], scaler: Optional[Mapping[str, Any]]) -> tuple[int, int]:
    """(min, max) replicas of a Deployment, from its autoscaler when it has one."""
    spec = (scaler or {}).get("spec") or {}
    if scaler is not None and scaler.get("kind") == "ScaledObject":
        return _int(spec.get("minReplicaCount"), 0), _int(spec.get("maxReplicaCount"), 100)
    if scaler is not None:
        return _int(spec.get("minReplicas"), 1), _int(spec.get("maxReplicas"), 1)
    replicas = _int((manifest.get("spec") or {}).get("replicas"), 1)
    return replicas, replicas


def gpu_type_of(pod: Mapping[str, Any], resource: str) -> str:
    """The SGP gpu_type a pod's node selector and GPU resource stand for."""
    selector = pod.get("nodeSelector") or {}
    try:
        from sgp_infra.plan.gpu import BUILTIN_PROFILES  # the planner's own tables, when installed
    except ImportError:  # pragma: no cover - the pack runs without sgp_infra too
        BUILTIN_PROFILES = {}
    for profile in BUILTIN_PROFILES.values():
        matches = [t for t, rule in profile.types.items()
                   if rule.resource == resource and dict(rule.node_selector).items() <= dict(selector).items()]
        if len(matches) == 1:
            return matches[0]
        if matches:  # e.g. Karpenter's a100 40/80 GB: the most specific selector wins
            return max(matches, key=lambda t: len(profile.types[t].node_selector))
    if EKS_KEY in selector:
        return str(selector[EKS_KEY])
    return f"{resource} on " + ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def gpu_totals_at_max(manifests: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """GPUs per type the stack may claim when every model is at max scale."""
    scalers = _scalers(manifests)
    totals: Counter[str] = Counter()
    for m in manifests:
        pod = pod_spec(m)
        if pod is None or m.get("kind") != "Deployment":
            continue
        meta = m.get("metadata") or {}
        _lo, hi = replica_bounds(m, scalers.get((meta.get("namespace"), meta.get("name"))))
        for c in all_containers(pod):
            for res, count in gpu_resources(c).items():
                totals[gpu_type_of(pod, res)] += _int(count) * hi
    return dict(sorted(totals.items()))


def check_gpu_quota(manifests: Sequence[Mapping[str, Any]], quota: Optional[Mapping[str, Any]]) -> list[str]:
    """GPUs per type at max scale stay within the stack's quota (types without a quota are unbounded)."""
    if not quota:
        return []
    out = []
    for gpu, total in gpu_totals_at_max(manifests).items():
        limit = quota.get(gpu)
        if limit is not None and total > _int(limit):
            out.append(f"{gpu}: {total} GPUs at max scale exceed this stack's quota of {limit}; "
                       "lower max_workers or raise sgp-infra:gpuQuota")
    return out


def check_high_priority_min_workers(manifests: Sequence[Mapping[str, Any]],
                                    high_priority_classes: Sequence[str] = HIGH_PRIORITY_CLASSES) -> list[str]:
    """High-priority models keep at least one worker: a cold start is what high priority avoids."""
    scalers = _scalers(manifests)
    out = []
    for m in manifests:
        pod = pod_spec(m)
        if pod is None or m.get("kind") != "Deployment" or pod.get("priorityClassName") not in high_priority_classes:
            continue
        meta = m.get("metadata") or {}
        lo, _hi = replica_bounds(m, scalers.get((meta.get("namespace"), meta.get("name"))))
        if lo < 1:
            out.append(f"{describe(m)}: high priority (priorityClassName {pod.get('priorityClassName')}) but can "
                       "scale to zero (min_workers 0); keep min_workers >= 1")
    return out


def _catalog_document(manifests: Sequence[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """The ``config`` of the catalogue the stack publishes (ConfigMap ``sgp-infra-catalog``), if readable."""
    for m in manifests:
        if m.get("kind") == "ConfigMap" and (m.get("metadata") or {}).get("name") == CATALOG_CONFIGMAP:
            text = (m.get("data") or {}).get(CATALOG_KEY)
            try:
                doc = json.loads(text) if isinstance(text, str) else None
            except ValueError:
                return None
            config = doc.get("config") if isinstance(doc, dict) else None
            return config if isinstance(config, dict) else None
    return None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def check_async_task_limit(manifests: Sequence[Mapping[str, Any]]) -> list[str]:
    """ASYNC models with ``min_workers: 0`` set ``async_tasks.task_timeout_seconds`` (model or template)."""
    config = _catalog_document(manifests)
    if config is None:
        return []
    templates = _map(config.get("sgp-infra:templates"))
    out = []
    for name, model in sorted(_map(config.get("sgp-infra:models")).items()):
        model = _map(model)
        own_limit = _map(model.get("async_tasks")).get("task_timeout_seconds")
        infra = _map(_map(model.get("vendor_configuration")).get("model_infra"))
        if infra or "vendor_configuration" in model:  # v5
            is_async = str(infra.get("endpoint_type", "sync")).upper() == "ASYNC"
            min_workers, limit = infra.get("min_workers", 0), own_limit
        else:  # v4: the template decides the endpoint type and defaults
            ref = model.get("model_template_id")
            template = _map(templates.get(ref)) or next(
                (_map(t) for t in templates.values() if _map(t).get("id") == ref), {})
            endpoint = _map(_map(template.get("vendor_configuration")).get("endpoint_config"))
            is_async = str(template.get("endpoint_type", "")).upper() == "ASYNC"
            min_workers = model.get("min_workers", endpoint.get("min_workers", 0))
            limit = own_limit or _map(template.get("async_tasks")).get("task_timeout_seconds")
        if is_async and _int(min_workers) == 0 and not limit:
            out.append(f"model '{name}' is ASYNC and can scale to zero but sets no task time limit; set "
                       f"sgp-infra:models.{name}.async_tasks.task_timeout_seconds (or on its template)")
    return out


# -- from Pulumi resources ----------------------------------------------------


def manifest_of(resource_type: str, props: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """A pulumi-kubernetes resource as the manifest it applies, else ``None``.

    ``kubernetes:apps/v1:Deployment`` → ``apiVersion: apps/v1, kind: Deployment``
    plus its properties (already camelCase); the core group is ``core/v1`` in
    type tokens and ``v1`` in manifests.
    """
    parts = resource_type.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes" or "/" not in parts[1]:
        return None
    group_version, kind = parts[1], parts[2]
    api_version = group_version[len("core/"):] if group_version.startswith("core/") else group_version
    return {"apiVersion": api_version, "kind": kind, **{k: v for k, v in props.items()
                                                          if k not in ("apiVersion", "kind")}}


CATALOG_CONFIGMAP, CATALOG_KEY = "sgp-infra-catalog", "catalog.json"


def quota_from_catalog(manifests: Sequence[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """``sgp-infra:gpuQuota`` of the catalogue the stack publishes (ConfigMap ``sgp-infra-catalog``)."""
    for m in manifests:
        if m.get("kind") == "ConfigMap" and (m.get("metadata") or {}).get("name") == CATALOG_CONFIGMAP:
            text = (m.get("data") or {}).get(CATALOG_KEY)
            if not isinstance(text, str):
                return None
            try:
                doc = json.loads(text) or {}
            except ValueError:  # an unreadable catalogue is the API's problem, not a quota
                return None
            quota = ((doc.get("config") or {}) if isinstance(doc, dict) else {}).get("sgp-infra:gpuQuota")
            return quota if isinstance(quota, dict) else None
    return None
