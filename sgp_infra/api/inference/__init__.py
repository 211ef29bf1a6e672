"""Inference through the API: routing, protocol translation, streaming,
scale-from-zero holds, limits and metrics.

``create_app`` calls :func:`install` once (it builds the per-app
:class:`~.gateway.Gateway` and closes its connection pool at shutdown) and
includes :data:`router`.  See ``docs/inference.md``.

Modules, in the order a call walks through them:

* :mod:`.routes`: the FastAPI routes (auth dependency, body, checks);
* :mod:`.call`: the answer to one call (admission, disconnects, reply, accounting);
* :mod:`.gateway`: the call's dealings with its model (hold, destination, retries);
* :mod:`.upstream`: the pooled aiohttp client and its error mapping; :mod:`.decoding`: bounded decompression;
* :mod:`.protocols`: SGP / VLLM / COHERE translation (pure); :mod:`.streams`: stream events;
* :mod:`.wake`: cold-start holds; :mod:`.settings`: limits and timeouts; :mod:`.metrics`: Prometheus metrics.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Mapping, Optional

from fastapi import FastAPI

from ...catalog import Catalog
from ..plain import serve_plain
from ..status import StatusSource
from .endpoints import EndpointSliceWatcher, StaticEndpoints, parse_backend_urls
from .gateway import Gateway
from .metrics import InferenceMetrics
from .routes import plain_routes, router
from .settings import InferenceSettings

__all__ = ["router", "install", "Gateway", "InferenceSettings", "endpoint_sources"]


def install(app: FastAPI, settings: Optional[InferenceSettings] = None) -> Gateway:
    """Attach the inference gateway to ``app`` (``app.state.inference``), run its endpoint
    sources (``app.state.endpoint_sources``) for the app's lifespan, and serve the inference
    POST routes as plain Starlette routes (:func:`~.routes.plain_routes`).

    Call it before including other routers: a request is matched against the
    app's routes in order, and the inference calls are the hot path.
    """
    state = app.state
    settings = settings or getattr(state, "inference_settings", None) or InferenceSettings()
    metrics = InferenceMetrics(state.metrics.registry)
    backends = getattr(state, "backends", {}) or {}
    gateway = Gateway(settings, metrics, state.status, backends, state.catalog.settings.namespace)
    state.inference = gateway
    state.endpoint_sources = endpoint_sources(gateway, state.catalog, backends, state.status)
    serve_plain(app, plain_routes())
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as value:
            sources = list(state.endpoint_sources)
            for source in sources:
                await source.start()
            try:
                yield value
            finally:
                for source in sources:
                    await source.stop()
                await gateway.aclose()

    app.router.lifespan_context = lifespan
    return gateway


def endpoint_sources(gateway: Gateway, catalog: Catalog, backends: Mapping[str, str],
                     status: StatusSource) -> list[Any]:
    """Where the models' pods come from, each feeding ``gateway.routing``:

    * a ``serve --backend MODEL=URL1,URL2`` list of two or more URLs: those pods
      (one URL stays the model's Service stand-in, as before routing);
    * in a cluster (``settings.endpoint_slices``; by default when status comes
      from Kubernetes): the EndpointSlices of every other model's Service.

    ``ValueError`` for a malformed ``--backend`` list (``serve`` checks it first).
    """
    static: dict[str, tuple[str, ...]] = {}
    for model in catalog.models.values():
        text = backends.get(model.name) or backends.get(model.object_name)
        if text and "," in text:
            static[model.object_name] = parse_backend_urls(text)
    sources: list[Any] = []
    if static:
        sources.append(StaticEndpoints(static, gateway.on_pods_change))
    from ..kube_status import KubeStatus

    kube = status if isinstance(status, KubeStatus) else None
    watch = gateway.settings.endpoint_slices
    if watch is None:
        watch = kube is not None
    services = sorted(m.object_name for m in catalog.models.values() if m.object_name not in static)
    if watch and services:
        # The status source's namespace and API server (serve --namespace), else the catalogue's and the pod's.
        namespace = kube.namespace if kube is not None else gateway.namespace
        configuration = gateway.settings.kube_configuration or (kube.configuration if kube is not None else None)
        sources.append(EndpointSliceWatcher(namespace, gateway.on_pods_change, services,
                                            configuration=configuration))
    return sources
