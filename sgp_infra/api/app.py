"""The catalogue API service: ``create_app(catalog, ...)`` → a FastAPI app.

It answers the SGP v4 and v5 read routes for one validated catalogue, with
live status from a :class:`~sgp_infra.api.status.StatusSource`; writes answer
405 naming the stack config to edit.  In a cluster the catalogue is the
published ConfigMap ``sgp-infra-catalog``; locally ``serve`` reads the stack
file.

Extension points (for inference routing, ``sgp_infra.api.inference``):

* ``app.state.catalog`` — the :class:`~sgp_infra.catalog.Catalog`;
  ``app.state.index`` — :class:`~sgp_infra.api.views.CatalogIndex`
  (precomputed bodies, ``index.model(name_or_id_or_deployment_id)``);
  ``app.state.status`` — the status source; ``app.state.backends`` — an
  optional ``{model name or object name: base URL}`` override of the in-cluster
  Service URLs; ``app.state.metrics.registry`` — the Prometheus registry to register
  metrics on (``/metrics`` serves it, or all workers' values in
  prometheus_client's multiprocess mode: ``metrics.exposition_registry``); ``app.state.stack`` — the stack
  name, if known; ``app.state.config_file`` — the stack file read, if no stack name is known.
* ``auth.caller`` — dependency returning the :class:`~sgp_infra.api.auth.Caller`
  (401/403 as JSON); ``common.visible_model(request, caller, ref)`` — the
  caller's model by name, id or deployment id, else a 404 ``ApiError``.
* ``errors.ApiError(status, detail, **extra)`` to raise, ``errors.api_error``
  to return; every error leaves the app in that one JSON shape.
* ``app.state.tasks`` — the :class:`~sgp_infra.api.tasks.TaskService` of
  ASYNC models (``None`` without any); ``api.tasks.enqueue_and_wait`` is the
  hook an inference route calls for an ASYNC model.
* If ``sgp_infra.api.inference`` exists, its ``router`` is included after
  the catalogue routes and its optional ``install(app)`` is called once.
"""

from __future__ import annotations

import importlib
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Mapping, Optional

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from ..catalog import Catalog
from ..catalog.settings import ApiLimits
from . import routes_v4, routes_v5, writes
from .auth import KeyRing
from .common import json_response
from .errors import install_error_handlers
from .limits import install_limits
from .metrics import Metrics, MetricsMiddleware
from .status import StaticStatus, StatusSource
from .tasks import install as install_tasks
from .views import CatalogIndex

DESCRIPTION = """\
SGP v4 and v5 read routes for a model catalogue kept in Pulumi stack config.
Send your API key in `x-api-key`; `x-selected-account-id` narrows to one of
its accounts. Creates, updates and deletes answer 405 with the stack config
path to edit: the catalogue has one source of truth.
"""


def _inference_module() -> Any:
    try:
        return importlib.import_module(f"{__package__}.inference")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__package__}.inference":
            return None
        raise


def create_app(catalog: Catalog, *, api_keys: Mapping[str, frozenset[str]],
               status_source: Optional[StatusSource] = None, stack: Optional[str] = None,
               backends: Optional[Mapping[str, str]] = None, include_inference: bool = True,
               config_file: Optional[str] = None, limits: Optional[ApiLimits] = None,
               nats_url: Optional[str] = None) -> FastAPI:
    """The service for ``catalog``.

    ``api_keys`` maps each key to the accounts it may see (see ``auth``);
    ``status_source`` defaults to every model ``ready`` (no I/O);
    ``stack`` names the stack in 405 answers (else ``config_file``, the file
    the catalogue was read from; see ``writes.config_source``); ``backends`` overrides where
    inference for a model is sent (used by inference routing and probing);
    ``limits`` are the client-facing limits the app enforces (see ``limits``).
    ``nats_url`` is the task broker of ASYNC models (default: the stack's,
    see ``api.tasks``).
    """
    status = status_source or StaticStatus()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await status.start()
        if app.state.tasks is not None:  # ASYNC models: connect to the task broker (in the background)
            await app.state.tasks.start()
        app.state.started = True
        try:
            yield
        finally:
            app.state.started = False
            if app.state.tasks is not None:
                await app.state.tasks.stop()
            await status.stop()

    app = FastAPI(title="sgp-infra catalogue API", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    metrics = Metrics()
    app.state.catalog = catalog
    app.state.index = CatalogIndex(catalog)
    app.state.keyring = KeyRing(api_keys)
    app.state.status = status
    app.state.stack = stack
    app.state.config_file = config_file
    app.state.backends = dict(backends or {})
    app.state.metrics = metrics
    app.state.started = False
    app.state.v5_page_cache = {}
    install_error_handlers(app)
    inference = _inference_module() if include_inference else None
    install_limits(app, limits)  # before MetricsMiddleware, so that counts (and logs) the requests the guard rejects
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["ops"], summary="Readiness: the catalogue is loaded and serving")
    async def readyz(request: Request) -> Response:
        if not request.app.state.started:
            return json_response({"status": "starting"}, status=503)
        return json_response({"status": "ready", "models": len(catalog.models)})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.exposed()), media_type=CONTENT_TYPE_LATEST)

    if inference is not None and hasattr(inference, "install"):
        inference.install(app)  # first: it adds the inference POST routes, matched before everything below
    install_tasks(app, catalog, nats_url)  # its task routes are matched first of all
    app.include_router(routes_v4.router)
    app.include_router(routes_v5.router)
    app.include_router(writes.router)
    if inference is not None and hasattr(inference, "router"):
        app.include_router(inference.router)
    return app
