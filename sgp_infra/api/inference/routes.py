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
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, NamedTuple, Optional

import jsonschema
import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ...catalog import Model
from ..auth import Caller, caller
from ..common import index_of, json_response, status_of, visible_model, visible_model_in
from ..errors import ApiError, api_error
from ..paging import DEFAULT_LIMIT, MAX_LIMIT, page_v5, sort_items
from ..views import CatalogIndex
from .gateway import ClientGone, Gateway, Slot, guarded_stream, until_disconnect
from .protocols import (BadBackendBody, Call, Op, backend_kind, backend_request, parse_delta, parse_result,
                        parse_v4, parse_v5_chat, parse_v5_completion, render_v4, render_v4_chunk, render_v5,
                        render_v5_chunk, validate_bindings)
from .proxy import ProxyStream, Sent, Upstream, UpstreamError
from .settings import Timeouts
from .streams import sse

router = APIRouter(tags=["inference"])

#: ``POST`` route templates that :mod:`.fast` serves ahead of FastAPI's router
#: (same endpoint functions, called with the path parameters then ``who=``).
FAST_ROUTES: set[str] = set()
#: The last segment of a v4 typed route → its template.
V4_FAST_OPS: dict[str, str] = {}

#: The status logged and counted for a request whose client left (nginx's convention); never sent.
CLIENT_GONE = 499
MAX_TIMEOUT_SECONDS = 3600
MAX_RETRIES = 5


def gateway_of(request: Request) -> Gateway:
    """The app's gateway, kept in the request's scope: a ``State`` attribute costs about 1 µs, and
    several steps of one request ask for it."""
    scope = request.scope
    gateway = scope.get(_GATEWAY)
    if gateway is None:
        gateway = scope[_GATEWAY] = request.app.state.inference
    return gateway


_GATEWAY = "sgp_infra.inference.gateway"


async def read_body(request: Request) -> dict[str, Any]:
    """The JSON object body, within the size limit (413) and well formed (422)."""
    limit = gateway_of(request).settings.max_body_bytes
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
    return decode_body(buf)


def decode_body(buf: bytes | bytearray) -> dict[str, Any]:
    """The request body as a JSON object (422 if it is not one); empty means ``{}``."""
    try:
        body = orjson.loads(buf) if buf else {}
    except orjson.JSONDecodeError:
        raise ApiError(422, "invalid request: body: not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid request: body: must be a JSON object")
    return body


class _JsonAnswer(Response):
    """``json_response(body)`` for a model's answer: the same status, body and headers
    (``content-length`` then ``content-type: application/json``), built without
    ``Response.__init__``'s general header handling, which this hot path does not need."""

    media_type = "application/json"

    def __init__(self, body: Any):
        content = orjson.dumps(body)
        self.status_code = 200
        self.body = content
        self.background = None
        self.raw_headers = [(b"content-length", b"%d" % len(content)), (b"content-type", b"application/json")]


def upstream_error_response(exc: UpstreamError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return api_error(exc.status, exc.detail, headers=headers)


#: Runs an inference request's work until the client leaves; raises :class:`ClientGone` when it has.
Guard = Callable[[Awaitable[Any]], Awaitable[Any]]


def request_guard(request: Request) -> Guard:
    """The guard for an ASGI request: :func:`until_disconnect` on its ``receive``."""
    return lambda work: until_disconnect(request, work)


async def _run(gw: Gateway, guard: Guard, model: Model, operation: str, work: Callable[[Slot], Any],
               slot: Optional[Slot] = None) -> Response:
    """Admit (unless ``slot`` was), run ``work(slot)`` under ``guard``, and map every failure to the error shape.

    ``work`` returns a finished response (the slot is released here) or a
    :class:`ProxyStream` (the stream releases it when it ends).
    """
    if slot is None:
        try:
            slot = gw.admit(model, operation)
        except UpstreamError as exc:
            return upstream_error_response(exc)
    try:
        response = await guard(work(slot))
    except (UpstreamError, BadBackendBody, ClientGone) as exc:
        return failure_response(slot, exc)
    except BaseException as exc:
        slot.finish(500, type(exc).__name__)
        raise
    if not isinstance(response, ProxyStream):
        slot.finish(response.status_code)
    return response


def failure_response(slot: Slot, exc: "UpstreamError | BadBackendBody | ClientGone") -> Response:
    """The answer to a call that failed with ``exc``, its slot released with the failure's status and kind."""
    if isinstance(exc, UpstreamError):
        slot.finish(exc.status, exc.kind)
        return upstream_error_response(exc)
    if isinstance(exc, BadBackendBody):
        slot.finish(502, "bad_response")
        return api_error(502, f"model '{slot.model.name}' answered a body of the wrong shape: {exc}")
    slot.finish(CLIENT_GONE, "client_disconnect")
    return Response(status_code=CLIENT_GONE)


def _stream_response(slot: Slot, upstream: Upstream, chunks: AsyncIterator[bytes], media_type: str) -> ProxyStream:
    async def on_close(disconnected: bool) -> None:
        # Always runs, even when the client left before the first chunk was pulled.
        try:
            await upstream.aclose()
        finally:
            slot.finish(CLIENT_GONE if disconnected else 200, "client_disconnect" if disconnected else None)

    return ProxyStream(guarded_stream(slot, chunks), on_close, media_type=media_type)


# --- typed operations (v4 and v5 chat/completions) ------------------------------------


Render = Callable[[Call, str, Any], dict[str, Any]]


class Typed(NamedTuple):
    """A typed inference call, checked and ready to forward: what :func:`typed` needs."""

    model: Model
    call: Call
    render: Render
    render_chunk: Render


class Forward(NamedTuple):
    """Where and what a typed call sends: its backend route, the shape spoken there, the body, the timeouts."""

    route: str
    kind: str
    payload: bytes
    timeouts: Timeouts


def forward_of(gw: Gateway, t: Typed) -> Forward:
    """What ``t`` sends to its model (a 400 ``ApiError`` if the model's routes cannot answer it)."""
    model, call = t.model, t.call
    route = model.streaming_predict_route if call.stream else model.predict_route
    kind = backend_kind(model, call.op, route)
    return Forward(route, kind, orjson.dumps(backend_request(call, kind, model)), gw.timeouts(model))


def typed_answer(t: Typed, kind: str, data: Any) -> Response:
    """The caller's answer to a non-streamed typed call, from the backend's JSON ``data``."""
    return _JsonAnswer(t.render(t.call, kind, parse_result(kind, t.call.op, data)))


async def typed(gw: Gateway, guard: Guard, t: Typed, *, forward: Optional[Forward] = None,
                slot: Optional[Slot] = None, sent: Optional[Sent] = None) -> Response:
    """Forward a typed call (completion, chat, embedding, rerank) and answer in the caller's shape.

    The express lane passes what it already did: the ``forward`` it worked
    out, the ``slot`` it was admitted with and the first attempt it ``sent``.
    """
    model, call, render, render_chunk = t
    route, kind, payload, timeouts = forward or forward_of(gw, t)

    async def work(slot: Slot) -> Response:
        if not call.stream:
            return typed_answer(t, kind, await gw.call_json(model, route, payload, timeouts, sent=sent))
        upstream = await gw.open(model, route, payload, timeouts)

        async def chunks() -> AsyncIterator[bytes]:
            async for event in gw.events(model, upstream, timeouts):
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

        return _stream_response(slot, upstream, chunks(), "text/event-stream")

    return await _run(gw, guard, model, call.op, work, slot)


#: A typed route's checks: (catalogue index, caller, path parameters, JSON body) → the call, or an ApiError.
Prepare = Callable[[CatalogIndex, Caller, tuple[str, ...], dict[str, Any]], Typed]
#: Route template → its :data:`Prepare`: the typed routes, which the express lane
#: (:mod:`.express`) may answer without the ASGI stack when the call is not streamed.
TYPED_ROUTES: dict[str, Prepare] = {}


def _prepare_v4(op: Op) -> Prepare:
    def prepare(index: CatalogIndex, who: Caller, params: tuple[str, ...], body: dict[str, Any]) -> Typed:
        model = visible_model_in(index, who, params[0]).model
        return Typed(model, parse_v4(op, body, model), render_v4, render_v4_chunk)

    return prepare


def _v4_op(prepare: Prepare) -> Callable[..., Any]:
    async def endpoint(request: Request, model_deployment_id: str, who: Caller = Depends(caller)) -> Response:
        body = await read_body(request)
        t = prepare(index_of(request), who, (model_deployment_id,), body)
        return await typed(gateway_of(request), request_guard(request), t)

    return endpoint


for _path, _op, _summary in (("completions", "completion", "Create a completion"),
                             ("chat-completions", "chat", "Create a chat completion"),
                             ("embeddings", "embedding", "Create embeddings"),
                             ("rerankings", "rerank", "Rerank chunks")):
    _template = f"/v4/models/{{model_deployment_id}}/{_path}"
    TYPED_ROUTES[_template] = _prepare_v4(_op)
    router.add_api_route(_template, _v4_op(TYPED_ROUTES[_template]), methods=["POST"],  # type: ignore[arg-type]
                         summary=_summary, name=f"v4 {_path}", tags=["v4 inference"])
    V4_FAST_OPS[_path] = _template
    FAST_ROUTES.add(_template)


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


TYPED_ROUTES["/v5/chat/completions"] = _prepare_v5(parse_v5_chat)
TYPED_ROUTES["/v5/completions"] = _prepare_v5(parse_v5_completion)


async def _v5_typed(request: Request, who: Caller, prepare: Prepare) -> Response:
    body = await read_body(request)
    return await typed(gateway_of(request), request_guard(request), prepare(index_of(request), who, (), body))


@router.post("/v5/chat/completions", summary="Create a chat completion", tags=["v5 inference"])
async def v5_chat(request: Request, who: Caller = Depends(caller)) -> Response:
    return await _v5_typed(request, who, TYPED_ROUTES["/v5/chat/completions"])


@router.post("/v5/completions", summary="Create a completion", tags=["v5 inference"])
async def v5_completion(request: Request, who: Caller = Depends(caller)) -> Response:
    return await _v5_typed(request, who, TYPED_ROUTES["/v5/completions"])


# --- raw operations (execute, /v5/inference) ---------------------------------------------


def _check_args(model: Model, args: dict[str, Any]) -> None:
    """v5 ``request_schema`` (JSON Schema) or v4 ``model_request_parameters``: 422 naming the field."""
    if model.api_version == "v5":
        schema = model.spec.vendor_configuration.model_image.request_schema  # type: ignore[union-attr]
        if schema:
            error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(args))
            if error is not None:
                where = ".".join(str(p) for p in error.absolute_path) or "args"
                raise ApiError(422, f"invalid request: {where}: {error.message}")
    elif "model_request_parameters" in args:
        validate_bindings(model, args["model_request_parameters"])


async def _raw(request: Request, model: Model, args: dict[str, Any], *, stream: bool, wrap: bool,
               read_timeout: Optional[float] = None, retries: Optional[int] = None) -> Response:
    """Forward ``args`` untouched; ``wrap`` puts answers in ``generic_inference`` objects (v5)."""
    gw = gateway_of(request)
    route = model.streaming_predict_route if stream else model.predict_route
    payload = orjson.dumps(args)
    timeouts = gw.timeouts(model, read_timeout)

    async def work(slot: Slot) -> Response:
        if not stream:
            data = await gw.call_json(model, route, payload, timeouts, retries)
            return _JsonAnswer({"response": data, "object": "generic_inference"} if wrap else data)
        upstream = await gw.open(model, route, payload, timeouts, retries)
        media = upstream.headers.get("content-type", "text/event-stream")

        async def chunks() -> AsyncIterator[bytes]:
            if not wrap:
                async for chunk in upstream.chunks():
                    yield chunk
                return
            async for event in gw.events(model, upstream, timeouts):
                if event.event is not None or event.data.strip() == "[DONE]":
                    continue
                try:
                    data: Any = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    data = event.data
                yield sse({"response": data, "object": "generic_inference.chunk"})

        return _stream_response(slot, upstream, chunks(), media if not wrap else "text/event-stream")

    return await _run(gw, request_guard(request), model, "execute" if not wrap else "inference", work)


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
    return await _raw(request, entry.model, body, stream=stream, wrap=False)


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
    return await _raw(request, model, args, stream=stream, wrap=True,
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


FAST_ROUTES.update({"/v5/chat/completions", "/v5/completions", "/v5/inference",
                    "/v4/models/{model_instance_id}/deployments/{deployment_id}/execute"})
