"""The inference routes, v4 and v5, as the official clients call them.

v4 (``scale-gp``): ``POST /v4/models/{model_deployment_id}/completions``,
``/chat-completions``, ``/embeddings``, ``/rerankings`` (the path takes the
model's deployment id, id or name), and
``POST /v4/models/{model}/deployments/{deployment}/execute`` (the body goes to
the model as it is).

v5 (``scale-gp-beta``): ``POST /v5/inference`` (``model`` is
``launch/<name>``, the name or the id; ``args`` go to the model as they are),
``POST /v5/chat/completions``, ``POST /v5/completions`` and
``GET /v5/chat/completions/models``.

Each route is declared as an ordinary FastAPI route (the OpenAPI document
describes it), and the POST routes are served as plain Starlette routes that
call the same endpoints (:func:`plain_routes`).  The caller was authenticated
at the request head (``guard.RequestGuard``), the body is read and checked
here, and the route returns an :class:`~.call.InferenceCall` that admits,
forwards, replies and counts (``docs/inference.md``: the one path).
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Callable, Literal, NamedTuple, Optional

import jsonschema
import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route

from ...catalog import Model
from .. import plain
from ..auth import Caller, caller
from ..common import index_of, json_response, status_of, visible_model, visible_model_in
from ..errors import ApiError
from ..paging import DEFAULT_LIMIT, MAX_LIMIT, page_v5, sort_items
from ..views import CatalogIndex
from .call import CLIENT_GONE, InferenceCall, Streamed, stream_media_type
from .gateway import Gateway, json_answer_bytes
from .queued import V5_INFERENCE_PENDING, answering_pending, model_json, refuse_stream
from .protocols import (Call, Op, backend_kind, backend_request, parse_delta, parse_result, parse_v4,
                        parse_v5_chat, parse_v5_completion, render_v4, render_v4_chunk, render_v5,
                        render_v5_chunk, validate_bindings)
from .routing import prefix_key
from .streams import sse
from .upstream import UpstreamError

router = APIRouter(tags=["inference"])

MAX_TIMEOUT_SECONDS = 3600
MAX_RETRIES = 5


def gateway_of(request: Request) -> Gateway:
    return request.app.state.inference


async def read_body(request: Request) -> dict[str, Any]:
    """The JSON object body, within the size limit (413), well formed (422) and not too deep (400)."""
    settings = gateway_of(request).settings
    limit = settings.max_body_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"request body of {length} bytes is over the {limit}-byte limit")
    buf = bytearray()
    try:
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise ApiError(413, f"request body is over the {limit}-byte limit")
    except ClientDisconnect:
        raise ApiError(CLIENT_GONE, "the client disconnected before sending the whole body") from None
    return decode_body(buf, settings.max_json_depth)


def decode_body(buf: bytes | bytearray, max_depth: int = 64) -> dict[str, Any]:
    """The request body as a JSON object: 422 if it is not one, 400 if it nests deeper than ``max_depth``.

    Empty means ``{}``.  The depth bound keeps every later step (re-encoding,
    JSON Schema checks, ``repr``) far from any recursion limit.
    """
    try:
        body = orjson.loads(buf) if buf else {}
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc).lower():
            raise ApiError(400, f"invalid request: body: JSON nested deeper than {max_depth} levels") from None
        raise ApiError(422, "invalid request: body: not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid request: body: must be a JSON object")
    # Cheap first: a body with few brackets cannot be deep (brackets inside strings only make this conservative).
    if buf.count(b"[") + buf.count(b"{") > max_depth and json_depth_over(body, max_depth):
        raise ApiError(400, f"invalid request: body: JSON nested deeper than {max_depth} levels")
    return body


def json_depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests arrays and objects more than ``limit`` levels deep (without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def json_reply(model: Model, body: Any) -> Response:
    """A model's answer, rebuilt for the caller, as a JSON response."""
    return Response(json_answer_bytes(model, body), media_type="application/json")


# --- typed operations (v4 and v5 chat/completions) ------------------------------------


Render = Callable[[Call, str, Any], dict[str, Any]]


class Typed(NamedTuple):
    """A typed inference call, checked and ready to forward."""

    model: Model
    call: Call
    render: Render
    render_chunk: Render


def typed(gw: Gateway, t: Typed, app: Any) -> InferenceCall:
    """Forward a typed call (completion, chat, embedding, rerank) and answer in the caller's shape.

    Works out the backend route, the shape spoken there (a 400 if the model's
    routes cannot answer the operation) and the body before the call is admitted.
    An ASYNC model's call runs as a task (:mod:`.queued`); ``app`` holds its queue.
    """
    model, call, render, render_chunk = t
    if call.stream:
        refuse_stream(model)
    route = model.streaming_predict_route if call.stream else model.predict_route
    kind = backend_kind(model, call.op, route)
    payload = orjson.dumps(backend_request(call, kind, model))
    timeouts = gw.timeouts(model)
    # Where prefix-affinity sends the call (docs/inference.md, "Routing across replicas").
    key = prefix_key(call) if model.inference.routing == "prefix-affinity" else None

    async def work() -> Response | Streamed:
        if not call.stream:
            data = await model_json(app, gw, model, route, payload, timeouts, key=key)
            return json_reply(model, render(call, kind, parse_result(kind, call.op, data)))
        answer = await gw.forward(model, route, payload, timeouts, key=key)

        async def chunks() -> AsyncIterator[bytes]:
            async for event in gw.events(model, answer):
                if event.event == "error":
                    raise UpstreamError(502, "upstream_5xx", f"model '{model.name}' reported an error: "
                                        f"{event.data[:500]}")
                if event.event is not None or event.data.strip() == "[DONE]":
                    continue  # the SGP clients parse every plain event as JSON: no [DONE]
                try:
                    data = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    raise UpstreamError(502, "bad_response", f"model '{model.name}' streamed an event "
                                        "that is not JSON") from None
                delta = parse_delta(kind, data)
                if delta is not None:
                    yield sse(render_chunk(call, kind, delta))

        return Streamed(answer, chunks(), "text/event-stream")

    return InferenceCall(gw, model, call.op, answering_pending(work) if model.is_async else work)


#: A typed route's checks: (catalogue index, caller, path parameters, JSON body) → the call, or an ApiError.
Prepare = Callable[[CatalogIndex, Caller, tuple[str, ...], dict[str, Any]], Typed]


def _prepare_v4(op: Op) -> Prepare:
    def prepare(index: CatalogIndex, who: Caller, params: tuple[str, ...], body: dict[str, Any]) -> Typed:
        model = visible_model_in(index, who, params[0]).model
        return Typed(model, parse_v4(op, body, model), render_v4, render_v4_chunk)

    return prepare


def _v4_op(prepare: Prepare) -> Callable[..., Any]:
    async def endpoint(request: Request, model_deployment_id: str, who: Caller = Depends(caller)) -> Response:
        body = await read_body(request)
        return typed(gateway_of(request), prepare(index_of(request), who, (model_deployment_id,), body),
                     request.app)

    return endpoint


for _path, _op, _summary in (("completions", "completion", "Create a completion"),
                             ("chat-completions", "chat", "Create a chat completion"),
                             ("embeddings", "embedding", "Create embeddings"),
                             ("rerankings", "rerank", "Rerank chunks")):
    router.add_api_route(f"/v4/models/{{model_deployment_id}}/{_path}", _v4_op(_prepare_v4(_op)),  # type: ignore[arg-type]
                         methods=["POST"], summary=_summary, name=f"v4 {_path}", tags=["v4 inference"])


def _v5_model(index: CatalogIndex, who: Caller, body: dict[str, Any]) -> tuple[Model, str]:
    ref = body.get("model")
    if not isinstance(ref, str) or not ref:
        raise ApiError(422, "invalid request: model: field required (launch/<name>, a name or a model id)")
    vendor, sep, name = ref.partition("/")
    if sep and vendor != "launch":
        raise ApiError(404, f"no model '{ref}': this service serves launch/<name> models only")
    return visible_model_in(index, who, name if sep else ref).model, ref


def _prepare_v5(parse: Callable[[dict[str, Any], str], Call]) -> Prepare:
    def prepare(index: CatalogIndex, who: Caller, params: tuple[str, ...], body: dict[str, Any]) -> Typed:
        model, label = _v5_model(index, who, body)
        created = int(time.time())
        return Typed(model, parse(body, label), lambda c, k, r: render_v5(c, k, r, created),
                     lambda c, k, d: render_v5_chunk(c, k, d, created))

    return prepare


_V5_CHAT = _prepare_v5(parse_v5_chat)
_V5_COMPLETION = _prepare_v5(parse_v5_completion)


@router.post("/v5/chat/completions", summary="Create a chat completion", tags=["v5 inference"])
async def v5_chat(request: Request, who: Caller = Depends(caller)) -> Response:
    body = await read_body(request)
    return typed(gateway_of(request), _V5_CHAT(index_of(request), who, (), body), request.app)


@router.post("/v5/completions", summary="Create a completion", tags=["v5 inference"])
async def v5_completion(request: Request, who: Caller = Depends(caller)) -> Response:
    body = await read_body(request)
    return typed(gateway_of(request), _V5_COMPLETION(index_of(request), who, (), body), request.app)


# --- raw operations (execute, /v5/inference) ---------------------------------------------


def _check_args(model: Model, args: dict[str, Any]) -> None:
    """v5 ``request_schema`` (JSON Schema) or v4 ``model_request_parameters``: 422 naming the field."""
    if model.api_version == "v5":
        schema = model.spec.vendor_configuration.model_image.request_schema  # type: ignore[union-attr]
        if schema:
            try:
                error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(args))
            except RecursionError:  # a schema that recurses with the data: the body's depth is already bounded
                raise ApiError(400, "invalid request: args: too deeply nested to check against the model's "
                                    "request_schema") from None
            if error is not None:
                where = ".".join(str(p) for p in error.absolute_path) or "args"
                raise ApiError(422, f"invalid request: {where}: {error.message}")
    elif "model_request_parameters" in args:
        validate_bindings(model, args["model_request_parameters"])


def _raw(gw: Gateway, app: Any, model: Model, args: dict[str, Any], *, stream: bool, wrap: bool,
         read_timeout: Optional[float] = None, retries: Optional[int] = None) -> InferenceCall:
    """Forward ``args`` untouched; ``wrap`` puts answers in ``generic_inference`` objects (v5).

    An ASYNC model's call runs as a task (:mod:`.queued`) waiting up to
    ``read_timeout`` (the caller's ``timeout_seconds``), else the model's read timeout.
    """
    if stream:
        refuse_stream(model)
    route = model.streaming_predict_route if stream else model.predict_route
    payload = orjson.dumps(args)
    timeouts = gw.timeouts(model, read_timeout)

    async def work() -> Response | Streamed:
        if not stream:
            data = await model_json(app, gw, model, route, payload, timeouts, retries, read_timeout)
            return json_reply(model, {"response": data, "object": "generic_inference"} if wrap else data)
        answer = await gw.forward(model, route, payload, timeouts, retries)
        if not wrap:
            return Streamed(answer, answer.chunks(), stream_media_type(answer))

        async def chunks() -> AsyncIterator[bytes]:
            async for event in gw.events(model, answer):
                if event.event is not None or event.data.strip() == "[DONE]":
                    continue
                try:
                    data: Any = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    data = event.data
                yield sse({"response": data, "object": "generic_inference.chunk"})

        return Streamed(answer, chunks(), "text/event-stream")

    run = answering_pending(work, V5_INFERENCE_PENDING if wrap else None) if model.is_async else work
    return InferenceCall(gw, model, "execute" if not wrap else "inference", run)


@router.post("/v4/models/{model_instance_id}/deployments/{deployment_id}/execute",
             summary="Execute a model deployment", tags=["v4 inference"])
async def execute(request: Request, model_instance_id: str, deployment_id: str,
                  who: Caller = Depends(caller)) -> Response:
    body = await read_body(request)
    entry = visible_model(request, who, model_instance_id)
    if deployment_id not in (entry.deployment["id"], entry.deployment["name"]):
        raise ApiError(404, f"model '{model_instance_id}' has no deployment '{deployment_id}'")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(422, "invalid request: stream: must be a boolean")
    if entry.model.endpoint_protocol.upper() == "SGP":
        _check_args(entry.model, body)
    return _raw(gateway_of(request), request.app, entry.model, body, stream=stream, wrap=False)


@router.post("/v5/inference", summary="Run a model on a free-form request", tags=["v5 inference"])
async def inference(request: Request, who: Caller = Depends(caller)) -> Response:
    body = await read_body(request)
    model, _label = _v5_model(index_of(request), who, body)
    args = body.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ApiError(422, "invalid request: args: must be an object")
    config = body.get("inference_configuration") or {}
    if not isinstance(config, dict):
        raise ApiError(422, "invalid request: inference_configuration: must be an object")
    timeout, retries = config.get("timeout_seconds"), config.get("num_retries")
    for key, value, low in (("timeout_seconds", timeout, 1), ("num_retries", retries, 0)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise ApiError(422, f"invalid request: inference_configuration.{key}: must be an integer >= {low}")
    _check_args(model, args)
    stream = args.get("stream") is True
    return _raw(gateway_of(request), request.app, model, args, stream=stream, wrap=True,
                read_timeout=float(min(timeout, MAX_TIMEOUT_SECONDS)) if timeout else None,
                retries=min(retries, MAX_RETRIES) if retries is not None else None)


# --- GET /v5/chat/completions/models ------------------------------------------------------

_AVAILABILITY = {"ready": "available", "failed": "unavailable", "deployment_timeout": "unavailable"}
_CHAT_TYPES = frozenset({"CHAT_COMPLETION", "COMPLETION"})


@router.get("/v5/chat/completions/models", summary="List models that answer chat completions",
            tags=["v5 inference"])
async def chat_models(request: Request, who: Caller = Depends(caller),
                      limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
                      starting_after: Optional[str] = Query(None), ending_before: Optional[str] = Query(None),
                      model_vendor: Optional[str] = Query(None), sort_by: Optional[str] = Query(None),
                      sort_order: Literal["asc", "desc"] = Query("asc")) -> Response:
    status = status_of(request)
    entries = index_of(request).models_of(who.accounts) if model_vendor in (None, "launch") else []
    items = [{"id": m.id, "model_name": m.name, "model_type": m.model_type.lower(), "model_vendor": "launch",
              "model_availability": _AVAILABILITY.get(status.get(m.object_name).status, "unknown")}
             for m in (e.model for e in entries) if m.model_type.upper() in _CHAT_TYPES]
    field = sort_by or "model_name"
    if items and field not in items[0]:
        raise ApiError(422, f"invalid sort_by {field!r}: use model_name, model_type, model_vendor or "
                            "model_availability")
    items = sort_items(items, [(field, sort_order == "desc"), ("model_name", False)])
    return json_response(page_v5(items, limit, starting_after, ending_before))



# --- serving: the POST routes as plain Starlette routes ----------------------------------


def plain_routes() -> list[Route]:
    """The inference POST routes of :data:`router` as plain Starlette routes, for the app to serve first
    (:mod:`sgp_infra.api.plain`: the body is read by :func:`read_body`)."""
    return plain.plain_routes(router)
