"""Live model status: what a list call reports, never what it waits for.

A :class:`StatusSource` answers ``get(object_name)`` from memory.  Sources that
need I/O refresh a cache in a background task started by the app's lifespan,
so no request ever waits on the Kubernetes API or a model's healthcheck.

* :class:`KubeStatus` (``kube_status.py``) — in a pod: reads the model
  Deployments and their pods with the API's read-only service account.
* :class:`ProbeStatus` — outside a cluster: probes each model's healthcheck
  route.
* :class:`StaticStatus` — a fixed answer (tests, benchmarks, ``--status none``).

Whatever goes wrong in a source (API unreachable, RBAC denied, timeouts), the
models' status degrades to ``deploying`` with a ``status_reason`` saying why;
the service never answers 500 because of it.

:func:`status_from_deployment` maps a Deployment and its pods (JSON as
``kubectl get -o json`` prints them) to an SGP status; it is pure and tested
against recorded objects.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Optional, Protocol, Sequence

import httpx

log = logging.getLogger("sgp_infra.api.status")

Status = Literal["ready", "deploying", "failed", "deployment_timeout"]

#: Container waiting reasons that mean the pod will not come up by itself.
FAILED_WAITING_REASONS = frozenset({
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})


@dataclass(frozen=True)
class ModelStatus:
    status: Status
    reason: Optional[str] = None
    #: When the model's Deployment was created (ISO 8601), if known.
    created_at: Optional[str] = None
    ready_replicas: int = 0


class StatusSource(Protocol):
    version: int

    def get(self, object_name: str) -> ModelStatus: ...

    def catalog_created_at(self) -> Optional[str]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class StaticStatus:
    """Every model has the same status (default: ready)."""

    #: Changes whenever any answer of ``get`` may have changed (never, here).
    version = 0

    def __init__(self, status: ModelStatus = ModelStatus("ready")):
        self._status = status

    def get(self, object_name: str) -> ModelStatus:
        return self._status

    def catalog_created_at(self) -> Optional[str]:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class CachedStatus:
    """Base of the refreshing sources: a dict replaced whole on each refresh."""

    #: Status of a model before the first refresh finished.
    initial_reason = "status not read yet"
    #: Status of a model the last refresh did not report.
    missing_reason = "no status for this model yet"

    def __init__(self, interval: float = 10.0):
        self.interval = interval
        self._cache: dict[str, ModelStatus] = {}
        self._missing = ModelStatus("deploying", self.missing_reason)
        self._degraded: Optional[str] = self.initial_reason
        self._degraded_status = ModelStatus("deploying", self.initial_reason)
        self._catalog_created_at: Optional[str] = None
        self._task: Optional[asyncio.Task[None]] = None
        #: Bumped when a refresh changes any answer; response caches key on it.
        self.version = 0

    def _degrade(self, reason: str) -> None:
        # One status object per reason: answers (and the v5 bytes cached on them) are reused.
        self._degraded, self._degraded_status = reason, ModelStatus("deploying", reason)

    def get(self, object_name: str) -> ModelStatus:
        if self._degraded is not None:
            return self._degraded_status
        return self._cache.get(object_name) or self._missing

    def catalog_created_at(self) -> Optional[str]:
        return self._catalog_created_at

    async def refresh(self) -> dict[str, ModelStatus]:
        raise NotImplementedError

    async def refresh_once(self) -> None:
        """One refresh; a failure degrades every model instead of raising."""
        try:
            fresh = await self.refresh()
            if fresh != self._cache or self._degraded is not None:
                self._cache, self._degraded = fresh, None
                self.version += 1
        except Exception as exc:  # noqa: BLE001 - any failure degrades, none escapes
            reason = f"status unavailable: {type(exc).__name__}: {_short(exc)}"
            if reason != self._degraded:
                log.warning("status source failed", extra={"reason": reason})
                self._degrade(reason)
                self.version += 1

    async def _loop(self) -> None:
        while True:
            await self.refresh_once()
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"{type(self).__name__}-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None


class ProbeStatus(CachedStatus):
    """Outside a cluster: a model is ready when its healthcheck route answers 2xx."""

    def __init__(self, targets: Mapping[str, str], *, interval: float = 10.0, timeout: float = 2.0):
        """``targets`` maps object names to healthcheck URLs."""
        super().__init__(interval)
        self.targets = dict(targets)
        self.timeout = timeout

    async def refresh(self) -> dict[str, ModelStatus]:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            results = await asyncio.gather(*(self._probe(client, url) for url in self.targets.values()))
        return dict(zip(self.targets, results, strict=True))

    @staticmethod
    async def _probe(client: httpx.AsyncClient, url: str) -> ModelStatus:
        try:
            response = await client.get(url)
        except httpx.HTTPError as exc:
            return ModelStatus("deploying", f"healthcheck {url} unreachable: {type(exc).__name__}")
        if 200 <= response.status_code < 300:
            return ModelStatus("ready", ready_replicas=1)
        return ModelStatus("deploying", f"healthcheck {url} answered {response.status_code}")


# --- Deployment → status ------------------------------------------------------


def status_from_deployment(deployment: Optional[Mapping[str, Any]],
                           pods: Sequence[Mapping[str, Any]] = ()) -> ModelStatus:
    """The SGP status of a model from its Deployment and pods (kubectl JSON)."""
    if deployment is None:
        return ModelStatus("deploying", "no Deployment in the cluster yet (pulumi up has not created it)")
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    created = meta.get("creationTimestamp")
    wanted = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    ready = int(st.get("readyReplicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)

    def result(status: Status, reason: Optional[str] = None) -> ModelStatus:
        return ModelStatus(status, reason, created, ready)

    for cond in st.get("conditions") or ():
        if cond.get("type") == "Progressing" and cond.get("status") == "False" \
                and cond.get("reason") == "ProgressDeadlineExceeded":
            return result("deployment_timeout", cond.get("message") or "rollout exceeded its progress deadline")
    failing = _failing_pod(pods)
    if failing is not None and available < wanted:
        return result("failed", failing)
    generation, observed = meta.get("generation"), st.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return result("deploying", "rollout not yet observed by the Deployment controller")
    if wanted == 0:
        return result("ready", "scaled to zero; the first request starts a worker")
    if updated < wanted:
        return result("deploying", f"rolling out: {updated} of {wanted} pods updated")
    if available < wanted:
        if available >= 1:  # serving while it scales up
            return result("ready", f"{available} of {wanted} pods available")
        return result("deploying", f"{available} of {wanted} pods available")
    return result("ready")


def _failing_pod(pods: Iterable[Mapping[str, Any]]) -> Optional[str]:
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "a pod")
        st = pod.get("status") or {}
        for cs in [*(st.get("initContainerStatuses") or ()), *(st.get("containerStatuses") or ())]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in FAILED_WAITING_REASONS:
                restarts = cs.get("restartCount", 0)
                return (f"pod {name} container {cs.get('name')}: {waiting['reason']}"
                        + (f" after {restarts} restarts" if restarts else "")
                        + (f": {waiting['message']}" if waiting.get("message") else ""))
        if st.get("phase") == "Failed":
            return f"pod {name} failed: {st.get('reason') or st.get('message') or 'unknown reason'}"
    return None


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:limit]
