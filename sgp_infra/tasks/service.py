"""The forwarder process: a :class:`~sgp_infra.tasks.forwarder.Forwarder` inside a tiny Starlette app.

The app's lifespan starts the broker connection and the pull loop and, on
shutdown (uvicorn turns SIGTERM into it), drains: stop pulling, finish held
tasks within ``drain_seconds``, return the rest to the queue.  Its routes are
the sidecar's probes and metrics: ``/healthz`` (the process runs),
``/readyz`` (NATS connected and the model container healthy; when NATS refused
the ``SGP_INFRA_NATS_*`` credentials, its 503 says so) and ``/metrics``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..catalog import Catalog
from ..plan.nats import task_layout
from .broker import TaskBroker
from .forwarder import Forwarder


class UnknownAsyncModel(ValueError):
    """The model is not in the catalogue, or is not an ASYNC model."""


def build_forwarder(catalog: Catalog, model_name: str, backend: str, nats_url: str) -> Forwarder:
    """The forwarder of one ASYNC model, with its own broker connection (names from ``task_layout``).

    Its NATS credentials come from ``SGP_INFRA_NATS_*`` (``NatsAuthInvalid`` if they do not make one set).
    """
    model = catalog.model(model_name)
    if model is None:
        raise UnknownAsyncModel(f"no model named or with id '{model_name}' in the catalogue")
    if not model.is_async:
        raise UnknownAsyncModel(f"model '{model.name}' is {model.endpoint_type}, not ASYNC: it has no task queue")
    layout = task_layout(catalog)
    queue = layout.queues[model.name]
    broker = TaskBroker(nats_url, layout, name=f"sgp-infra-forwarder-{model.object_name}", queues=[model.name])
    return Forwarder(broker, queue, backend, model.predict_route, model.healthcheck_route)


def forwarder_app(forwarder: Forwarder, drain_seconds: float) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await forwarder.broker.start()
        await forwarder.start()
        try:
            yield
        finally:
            await forwarder.stop(drain_seconds)
            await forwarder.broker.close()

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        if await forwarder.ready():
            return JSONResponse({"status": "ready"})
        body: dict[str, object] = {"status": "not ready", "nats": forwarder.broker.ready}
        if forwarder.broker.auth_error:  # the credentials were refused: say so (names variables, never values)
            body["error"] = forwarder.broker.auth_error
        return JSONResponse(body, status_code=503)

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(forwarder.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)],
                     lifespan=lifespan)
