"""ASYNC endpoints in the API: Launch's task routes, and the hook the inference routes call.

Routes (Launch-compatible shapes, see docs/async.md):

* ``POST /v1/async-tasks?model_endpoint_id=<model name or id>`` with
  ``{"args": {...}}`` (or ``{"url": ...}``; optional ``callback_url``) →
  ``{"task_id": ...}``, once JetStream has acknowledged the task (else 503).
* ``GET /v1/async-tasks/{task_id}`` → ``{"task_id", "status", "result",
  "traceback", "status_code"}``; ``?wait=S`` (an sgp-infra extension) holds the
  answer up to S seconds until the task is final.

A task is visible only to keys that can see its model's account; any other
key, an unknown id and an expired result all get the same 404.

The hook for the v4/v5 inference routes on an ASYNC model is
:func:`enqueue_and_wait` (and :func:`task_response` to answer from its outcome).
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response

from ...catalog import Catalog, Model
from ..auth import Caller, caller
from ..common import json_response, visible_model
from ..errors import ApiError
from ..plain import plain_routes, serve_plain
from .service import TaskOutcome, TaskService, is_task_id

__all__ = ["TaskOutcome", "TaskService", "enqueue_and_wait", "install", "router", "task_response"]

router = APIRouter(tags=["async tasks"])

#: Longest ``?wait=`` a GET may hold (below common proxy idle timeouts).
MAX_WAIT_SECONDS = 60.0


class CreateAsyncTask(BaseModel):
    """Launch's ``CreateAsyncTaskV1Request`` (the fields sgp-infra runs; pickling is not supported)."""

    model_config = ConfigDict(extra="forbid")

    args: Optional[Any] = Field(default=None, description="the JSON body the model's predict route receives")
    url: Optional[str] = Field(default=None, description="sent to the model as {\"url\": ...} when args is absent")
    callback_url: Optional[str] = Field(default=None, description="POSTed the final task state once")
    return_pickled: bool = False
    cloudpickle: Optional[str] = None

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        """An http(s) URL with a host, checked now: the forwarder calls it only when the task ends,
        where an unusable URL could only be logged, never reported to the client."""
        if value is None:
            return value
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError on a port that is not a number in range
        except ValueError as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        if not parts.hostname:
            raise ValueError("must name a host (http://host/path)")
        return value


def task_service(request: Request) -> TaskService:
    service: Optional[TaskService] = getattr(request.app.state, "tasks", None)
    if service is None:
        raise ApiError(404, "this catalogue has no ASYNC models, so it has no task queue")
    return service


#: What the OpenAPI document says of the parameters the task routes read themselves (they are served as
#: plain Starlette routes, :mod:`sgp_infra.api.plain`, so FastAPI does not parse them).
_MODEL_PARAM = {"name": "model_endpoint_id", "in": "query", "required": True, "schema": {"type": "string"},
                "description": "the model's name or id"}
_WAIT_PARAM = {"name": "wait", "in": "query", "required": False,
               "schema": {"type": "number", "minimum": 0.0, "maximum": MAX_WAIT_SECONDS, "default": 0.0},
               "description": "hold the answer up to this many seconds until the task is SUCCESS or FAILURE "
                              "(sgp-infra extension)"}


class WaitQuery(BaseModel):
    """``?wait=``, checked as FastAPI would check a ``Query`` (same 422 on a bad value)."""

    wait: float = Field(0.0, ge=0.0, le=MAX_WAIT_SECONDS)


def _invalid(exc: ValidationError, where: str) -> RequestValidationError:
    """FastAPI's own validation error (the app's 422 handler answers it) for a pydantic error in ``where``."""
    return RequestValidationError([{**e, "loc": (where, *e["loc"])} for e in exc.errors()])


async def _task_body(request: Request) -> CreateAsyncTask:
    raw = await request.body()
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required",
                                       "input": None}])
    # Strict JSON first, as every other route reads bodies: pydantic's own JSON parser takes NaN,
    # Infinity and 1e999 as floats, which the task would then carry to the model as null.
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",),
                                       "msg": f"not valid JSON ({exc})", "input": None}]) from None
    try:
        return CreateAsyncTask.model_validate(value)
    except ValidationError as exc:
        raise _invalid(exc, "body") from None


@router.post("/v1/async-tasks", summary="Queue a task for an ASYNC model (Launch's create async task)",
             openapi_extra={"parameters": [_MODEL_PARAM], "requestBody": {
                 "required": True, "content": {"application/json": {"schema": CreateAsyncTask.model_json_schema()}}}})
async def create_async_task(request: Request, who: Caller = Depends(caller)) -> Response:
    model_endpoint_id = request.query_params.get("model_endpoint_id")
    if model_endpoint_id is None:
        raise RequestValidationError([{"type": "missing", "loc": ("query", "model_endpoint_id"),
                                       "msg": "Field required", "input": None}])
    body = await _task_body(request)
    entry = visible_model(request, who, model_endpoint_id)
    if body.return_pickled or body.cloudpickle is not None:
        raise ApiError(422, "pickled tasks are not supported; send JSON args")
    if body.args is None and body.url is None:
        raise ApiError(422, "send args (the model's JSON input) or url")
    service = task_service(request)
    task_id = await service.enqueue(entry.model, args=body.args, url=body.url, callback_url=body.callback_url)
    return json_response({"task_id": task_id})


@router.get("/v1/async-tasks/{task_id}", summary="A task's status and result (Launch's get async task)",
            openapi_extra={"parameters": [_WAIT_PARAM]})
async def get_async_task(request: Request, task_id: str, who: Caller = Depends(caller)) -> Response:
    wait = 0.0
    text = request.query_params.get("wait")
    if text is not None:
        try:
            wait = WaitQuery.model_validate({"wait": text}).wait
        except ValidationError as exc:
            raise _invalid(exc, "query") from None
    missing = ApiError(404, f"no task '{task_id}' in the accounts this API key may see")
    if not is_task_id(task_id):
        raise missing
    service = task_service(request)
    record = await service.read(task_id, wait, lambda r: who.can_see(r.account_id))
    if record is None or not who.can_see(record.account_id):
        raise missing
    return json_response(record.public())


def install(app: FastAPI, catalog: Catalog, nats_url: Optional[str]) -> Optional[TaskService]:
    """Add the task routes (served as plain Starlette routes, matched before every other route: call it
    before including the other routers); with ASYNC models, create ``app.state.tasks`` (started by the
    app's lifespan).

    ``nats_url`` defaults to the stack's broker (``sgp-infra:async.natsUrl``, else the in-cluster NATS).
    """
    from ...plan.nats import client_url, has_async

    # First of all routes: an ASYNC task is two requests (create, then the held GET), and no other
    # route answers /v1/async-tasks.
    serve_plain(app, plain_routes(router, frozenset({"GET", "POST"})), first=True)
    app.include_router(router)
    if not has_async(catalog):
        app.state.tasks = None
        return None
    service = TaskService(catalog, nats_url or client_url(catalog.settings), app.state.metrics.registry)
    app.state.tasks = service
    return service


async def enqueue_and_wait(app: Any, model: Model, args_bytes: bytes, timeout: float) -> TaskOutcome:
    """The inference routes' hook for an ASYNC model: queue the call, wait up to ``timeout`` for its answer.

    ``app`` is the FastAPI app (``request.app``); ``args_bytes`` the JSON body
    the model's predict route would get on a synchronous call.  Raises
    ``ApiError`` 503 when the broker cannot take the task.  Answer the caller
    with :func:`task_response`.
    """
    service: Optional[TaskService] = getattr(app.state, "tasks", None)
    if service is None:
        raise ApiError(503, f"model '{model.name}' is ASYNC but this service has no task queue")
    return await service.enqueue_and_wait(model, args_bytes, timeout)


def task_response(outcome: TaskOutcome) -> Optional[Response]:
    """The answer for an outcome the route does not translate itself.

    ``None`` for SUCCESS: the route builds its usual answer from
    ``outcome.record.result`` (the model's JSON, as a synchronous call would
    have returned it).  FAILURE: a 502 with the model's status code and error.
    Not finished within the timeout: 202 with the task id to poll.
    """
    record = outcome.record
    if outcome.done and record is not None and record.status == "SUCCESS":
        return None
    if outcome.done and record is not None:
        return json_response({"status": 502, "error": "bad_gateway", "task_id": outcome.task_id,
                              "detail": f"the model's task failed: {record.traceback}",
                              "model_status_code": record.status_code}, status=502)
    return json_response({"task_id": outcome.task_id, "status": outcome.status,
                          "detail": "the task is still running; poll GET /v1/async-tasks/{task_id}"}, status=202)
