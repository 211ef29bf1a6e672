"""Inference through the API: routing, protocol translation, streaming,
scale-from-zero holds, limits and metrics.

``create_app`` calls :func:`install` once (it builds the per-app
:class:`~.gateway.Gateway` and closes its connection pool at shutdown) and
includes :data:`router`; :class:`~.fast.FastPath` serves the ``POST``
routes ahead of FastAPI's router (same endpoints); :func:`~.express.express_protocol`
gives uvicorn the protocol that answers non-streamed typed calls without the
ASGI stack.  See ``docs/inference.md``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI

from .express import express_protocol
from .fast import FastPath
from .gateway import Gateway
from .metrics import InferenceMetrics
from .routes import router
from .settings import InferenceSettings, settings_from_env

__all__ = ["router", "install", "FastPath", "Gateway", "InferenceSettings", "express_protocol"]


def install(app: FastAPI, settings: Optional[InferenceSettings] = None) -> Gateway:
    """Attach the inference gateway to ``app`` (``app.state.inference``)."""
    state = app.state
    settings = settings or getattr(state, "inference_settings", None) or settings_from_env()
    metrics = InferenceMetrics(state.metrics.registry)
    gateway = Gateway(settings, metrics, state.status, getattr(state, "backends", {}) or {},
                      state.catalog.settings.namespace)
    state.inference = gateway
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
