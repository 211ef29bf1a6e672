"""Where a model's ready pods are: EndpointSlices in a cluster, ``--backend`` URLs locally.

Both sources call ``on_change(service_name, pods)`` with the full set of ready
pod base URLs (``http://10.1.2.3:8000``) whenever a model's set changes; an
empty set means "no endpoint information": route to the Service, as before
there was routing.  :class:`~.routing.Routing.on_change` takes exactly that.

In a cluster, :class:`EndpointSliceWatcher` runs one list-then-watch of the
namespace's ``discovery.k8s.io/v1`` EndpointSlices that carry the
``kubernetes.io/service-name`` label (one connection whatever the number of
models; slices of Services that are not models' are dropped on arrival), with
the API's service account, whose Role grants ``list/watch`` on
``endpointslices`` (``plan/api.py``).  A Service's pods are the union of its
slices' endpoints whose ``conditions.ready`` is not false (Kubernetes asks
consumers to read an absent value as ready; a terminating pod is never
ready), on the port named ``http`` (the model Service's only port) or else the
slice's first port.

The watch ends every ``watch_timeout`` seconds (the API server closes it) and
resumes from the last resourceVersion; a ``410 Gone`` re-lists at once, any
other error re-lists after an exponential backoff with jitter.  While the API
server is unreachable the last known pods stay: a stale address fails fast
and is skipped by :mod:`.routing`, which beats routing nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from typing import Any, Callable, Collection, Iterable, Mapping, Optional
from urllib.parse import urlsplit

log = logging.getLogger("sgp_infra.api.inference.endpoints")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: The label selector the watch sends: every slice that belongs to a Service.
SLICE_SELECTOR = SERVICE_NAME_LABEL
#: The model Service's port name (``plan/service.py``).
PORT_NAME = "http"

OnChange = Callable[[str, frozenset[str]], None]


# --- pure: one EndpointSlice → ready pod URLs --------------------------------------------------


def _host(address: str, address_type: str) -> str:
    if address_type == "IPv6" or ":" in address:
        try:
            return f"[{ipaddress.IPv6Address(address).compressed}]"
        except ValueError:
            return address
    return address


def slice_pods(obj: Mapping[str, Any]) -> tuple[Optional[str], frozenset[str]]:
    """``(service name, ready pod base URLs)`` of an EndpointSlice (the JSON the
    API server sends); the name is ``None`` when the slice has no service label."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service = labels.get(SERVICE_NAME_LABEL)
    ports = obj.get("ports") or []
    port = next((p for p in ports if p.get("name") == PORT_NAME), ports[0] if ports else None)
    number = port.get("port") if port else None
    if not isinstance(number, int):
        return service, frozenset()
    scheme = "https" if str((port or {}).get("appProtocol") or "").lower() == "https" else "http"
    kind = str(obj.get("addressType") or "IPv4")
    pods = set()
    for endpoint in obj.get("endpoints") or []:
        if (endpoint.get("conditions") or {}).get("ready") is False:
            continue
        for address in endpoint.get("addresses") or []:
            pods.add(f"{scheme}://{_host(str(address), kind)}:{number}")
    return service, frozenset(pods)


class SliceIndex:
    """The slices seen so far, by slice name, and the pods per Service they add up to."""

    def __init__(self) -> None:
        self.slices: dict[str, tuple[Optional[str], frozenset[str]]] = {}

    def put(self, obj: Mapping[str, Any]) -> set[str]:
        """Add or replace a slice; the Service names whose pods may have changed."""
        name = (obj.get("metadata") or {}).get("name", "")
        old = self.slices.get(name, (None, frozenset()))[0]
        self.slices[name] = slice_pods(obj)
        return {s for s in (old, self.slices[name][0]) if s}

    def delete(self, obj: Mapping[str, Any]) -> set[str]:
        name = (obj.get("metadata") or {}).get("name", "")
        service, _ = self.slices.pop(name, (None, frozenset()))
        return {service} if service else set()

    def pods(self, service: str) -> frozenset[str]:
        out: set[str] = set()
        for owner, pods in self.slices.values():
            if owner == service:
                out |= pods
        return frozenset(out)

    def services(self) -> set[str]:
        return {s for s, _ in self.slices.values() if s}


# --- the watcher ------------------------------------------------------------------------------


class EndpointSliceWatcher:
    """Ready pod addresses of the given Services (model object names), kept
    current from the API server; see the module docstring.

    ``services``: the Service names to report (``None``: every Service in the
    namespace); :meth:`set_services` changes them when the catalogue does.
    ``configuration``: a ``kubernetes_asyncio.client.Configuration`` for an API
    server other than the pod's own (tests); by default the in-cluster
    service-account config is loaded.
    """

    def __init__(self, namespace: str, on_change: OnChange, services: Optional[Iterable[str]] = None, *,
                 configuration: Any = None, watch_timeout: int = 240, request_timeout: float = 10.0,
                 backoff: tuple[float, float] = (0.5, 30.0)):
        self.namespace = namespace
        self.on_change = on_change
        self.wanted: Optional[frozenset[str]] = None if services is None else frozenset(services)
        self.configuration = configuration
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self.backoff = backoff
        self.index = SliceIndex()
        #: What was last reported per Service (what ``on_change`` was told).
        self.reported: dict[str, frozenset[str]] = {}
        #: Set once the first list has been applied (the gateway may wait on it briefly).
        self.synced = asyncio.Event()
        self.errors = 0
        self._task: Optional[asyncio.Task[None]] = None
        self._api_client: Any = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin watching in a background task (returns at once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="endpointslice-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = None

    def pods(self, service: str) -> frozenset[str]:
        return self.reported.get(service, frozenset())

    def set_services(self, services: Optional[Iterable[str]]) -> None:
        """Report these Services from now on (those dropped are reported empty once)."""
        self.wanted = None if services is None else frozenset(services)
        self._report(self.index.services() | set(self.reported))

    # --- reporting ----------------------------------------------------------------------------

    def _wants(self, service: str) -> bool:
        return self.wanted is None or service in self.wanted

    def _report(self, services: Collection[str]) -> None:
        for service in sorted(services):
            pods = self.index.pods(service) if self._wants(service) else frozenset()
            if pods == self.reported.get(service, frozenset()):
                continue
            if pods:
                self.reported[service] = pods
            else:
                self.reported.pop(service, None)
            try:
                self.on_change(service, pods)
            except Exception:  # noqa: BLE001 - a faulty callback must not stop the watch
                log.exception("endpoints callback failed for %s", service)

    # --- the API server ----------------------------------------------------------------------------

    async def _api(self) -> Any:
        if self._api_client is None:
            from kubernetes_asyncio import client, config

            if self.configuration is None:
                config.load_incluster_config()
            self._api_client = client.ApiClient(self.configuration)
        return self._api_client

    async def _list(self) -> str:
        """Replace the index with a fresh list; report every difference; the list's resourceVersion."""
        from kubernetes_asyncio import client

        api = await self._api()
        listed = await client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            self.namespace, label_selector=SLICE_SELECTOR, _request_timeout=self.request_timeout)
        before = self.index.services()
        self.index = SliceIndex()
        for item in listed.items:
            self.index.put(api.sanitize_for_serialization(item))
        self._report(before | self.index.services() | set(self.reported))
        self.synced.set()
        return str(listed.metadata.resource_version or "")

    async def _watch(self, resource_version: str) -> str:
        """Apply watch events until the server ends the watch; the last resourceVersion seen."""
        from kubernetes_asyncio import client, watch

        api = client.DiscoveryV1Api(await self._api())
        async with watch.Watch() as w:
            stream = w.stream(api.list_namespaced_endpoint_slice, self.namespace, label_selector=SLICE_SELECTOR,
                              resource_version=resource_version, allow_watch_bookmarks=True,
                              timeout_seconds=self.watch_timeout, _request_timeout=self.watch_timeout + 30)
            async for event in stream:
                kind, obj = event.get("type"), event.get("raw_object") or {}
                if kind in ("ADDED", "MODIFIED"):
                    self._report(self.index.put(obj))
                elif kind == "DELETED":
                    self._report(self.index.delete(obj))
                # BOOKMARK: only moves the resourceVersion on (the Watch keeps it)
            return str(w.resource_version or resource_version)

    async def _run(self) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        delay = self.backoff[0]
        while True:
            try:
                version = await self._list()
                delay = self.backoff[0]
                while True:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: re-list now
                    continue
                self._failed(exc)
            except Exception as exc:  # noqa: BLE001 - connection errors, timeouts, config: retry
                self._failed(exc)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.backoff[1])

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        log.warning("EndpointSlice watch in %s failed (%s: %s); pods as last known, retrying",
                    self.namespace, type(exc).__name__, exc)


# --- local: serve --backend MODEL=URL1,URL2 -------------------------------------------------------


def parse_backend_urls(text: str) -> tuple[str, ...]:
    """``"URL1,URL2"`` → the URLs (no trailing slash), in order; ``ValueError``
    saying which item is wrong: each must be ``http(s)://host[:port][/path]``
    with no query or fragment, and none may repeat."""
    out: list[str] = []
    for n, item in enumerate(text.split(","), 1):
        url = item.strip().rstrip("/")
        where = f"URL {n} of {text!r}"
        if not url:
            raise ValueError(f"{where} is empty (expected URL1,URL2,... with no empty item)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{where} ({url!r}) is not http://host:port or https://host:port")
        try:
            _ = parts.port  # parsed on access: an invalid port raises here
        except ValueError:
            raise ValueError(f"{where} ({url!r}) has an invalid port") from None
        if parts.query or parts.fragment:
            raise ValueError(f"{where} ({url!r}) must not have a query or fragment")
        if url in out:
            raise ValueError(f"{where} ({url!r}) is listed twice")
        out.append(url)
    return tuple(out)


class StaticEndpoints:
    """Fixed pods per model (``serve --backend MODEL=URL1,URL2``), with the
    watcher's interface: :meth:`start` reports each model's pods once."""

    def __init__(self, pods: Mapping[str, Iterable[str]], on_change: OnChange):
        self.fixed = {name: frozenset(u.rstrip("/") for u in urls) for name, urls in pods.items()}
        self.on_change = on_change
        self.synced = asyncio.Event()

    async def start(self) -> None:
        for name, pods in sorted(self.fixed.items()):
            self.on_change(name, pods)
        self.synced.set()

    async def stop(self) -> None:
        return None

    def pods(self, service: str) -> frozenset[str]:
        return self.fixed.get(service, frozenset())
