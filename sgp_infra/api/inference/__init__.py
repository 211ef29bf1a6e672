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
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI

from .gateway import Gateway
from .metrics import InferenceMetrics
from .routes import plain_routes, router
from .settings import InferenceSettings

__all__ = ["router", "install", "Gateway", "InferenceSettings"]


def install(app: FastAPI, settings: Optional[InferenceSettings] = None) -> Gateway:
    """Attach the inference gateway to ``app`` (``app.state.inference``) and serve the inference POST
    routes as plain Starlette routes (:func:`~.routes.plain_routes`).

    Call it before including other routers: a request is matched against the
    app's routes in order, and the inference calls are the hot path.
    """
    state = app.state
    settings = settings or getattr(state, "inference_settings", None) or InferenceSettings()
    metrics = InferenceMetrics(state.metrics.registry)
    gateway = Gateway(settings, metrics, state.status, getattr(state, "backends", {}) or {},
                      state.catalog.settings.namespace)
    state.inference = gateway
    for route in plain_routes():
        app.router.add_route(route.path, route.endpoint, methods=route.methods, name=route.name,
                             include_in_schema=False)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as value:
            try:
                yield value
            finally:
                await gateway.aclose()

    app.router.lifespan_context = lifespan
    return gateway
