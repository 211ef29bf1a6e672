"""SGP v5 reads: ``GET /v5/models`` and ``GET /v5/models/{model_id}``.

Cursor pagination as the official ``scale-gp-beta`` client drives it.  The
default order is by ``name`` ascending (ids are opaque, and ``created_at`` ties
outside a cluster); ``sort_by`` takes any top-level field of a model.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from .auth import Caller, caller
import orjson

from .common import index_of, json_response, live_v5_bytes, live_v5_model, status_of, visible_model
from .errors import ApiError
from .paging import DEFAULT_LIMIT, MAX_LIMIT, page_v5, sort_items

router = APIRouter(prefix="/v5", tags=["v5"])

#: Fields whose values come from the status source at request time.
LIVE_FIELDS = frozenset({"status", "status_reason", "created_at"})


class ListParams(BaseModel):
    """Query of ``GET /v5/models``, validated as one model (one pass, not eight)."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="items per page")
    starting_after: Optional[str] = Field(None, description="the id of the item before the page")
    ending_before: Optional[str] = Field(None, description="the id of the item after the page")
    name: Optional[str] = Field(None, description="only the model with this name")
    model_vendor: Optional[str] = Field(None, description="only models of this vendor (here: launch)")
    sort_by: Optional[str] = Field(None, description="a model field (default: name)")
    sort_order: Literal["asc", "desc"] = "asc"


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The OpenAPI query parameters of ``model``'s fields, as FastAPI declares a query model's."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    return [{"name": name, "in": "query", "required": name in required, "schema": field,
             **({"description": field["description"]} if "description" in field else {})}
            for name, field in schema["properties"].items()]


#: Bytes of cached pages kept at most (pages of up to 10,000 models are megabytes each).
PAGE_CACHE_BYTES = 32 * 1024 * 1024


@router.get("/models", summary="List models", openapi_extra={"parameters": _query_parameters(ListParams)})
async def list_models(request: Request, who: Caller = Depends(caller)) -> Response:
    """The page for this query, from the page cache when it can be.

    The catalogue never changes while the service runs and status changes
    only on a refresh (``status.version``), so a page is cached per raw query
    string, caller accounts and status version, and a cached page is answered
    before the query is even parsed.  That parsing is done here, with
    ``ListParams``, rather than by FastAPI from a ``Query()`` model: FastAPI's
    per-request query-model handling cost about as much as the rest of the
    request (profiled on ``bench/bench_api.py``).  The OpenAPI document
    declares the same parameters (``openapi_extra``).
    """
    status = status_of(request)
    version = getattr(status, "version", None)
    cache: dict[tuple[object, ...], bytes] = request.app.state.v5_page_cache
    key = (who.accounts, version, request.scope["query_string"])
    if version is not None:
        body = cache.get(key)
        if body is not None:
            return Response(body, media_type="application/json")
    try:
        params = ListParams.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None
    body = _list_body(request, params, who)
    # Not cached: pages of a status source that does not version its answers, and pages over the whole cap.
    if version is not None and len(body) <= PAGE_CACHE_BYTES:
        state = request.app.state
        held = getattr(state, "v5_page_cache_bytes", 0) + len(body)
        if held > PAGE_CACHE_BYTES or len(cache) >= 512:
            cache.clear()
            held = len(body)
        state.v5_page_cache_bytes = held
        cache[key] = body
    return Response(body, media_type="application/json")


def _list_body(request: Request, params: ListParams, who: Caller) -> bytes:
    limit, starting_after, ending_before = params.limit, params.starting_after, params.ending_before
    name, model_vendor, sort_by, sort_order = params.name, params.model_vendor, params.sort_by, params.sort_order
    status = status_of(request)
    entries = index_of(request).models_of(who.accounts)
    if name is not None:
        entries = [e for e in entries if e.model.name == name]
    if model_vendor is not None:
        entries = [e for e in entries if e.v5["model_vendor"] == model_vendor]
    field = sort_by or "name"
    if entries and field not in entries[0].v5:
        raise ApiError(422, f"invalid sort_by {field!r}: use a model field such as name, created_at, status, id")
    descending = sort_order == "desc"
    if field in LIVE_FIELDS:
        # Sorting on live values needs every live body; the common case does not.
        items = [live_v5_model(e, status.get(e.model.object_name)) for e in entries]
        items = sort_items(items, [(field, descending), ("name", False)])
        return orjson.dumps(page_v5(items, limit, starting_after, ending_before))
    if field != "name" or descending:  # entries are already in name order
        keyed = sort_items([{"k": e.v5[field], "name": e.model.name, "e": e} for e in entries],
                           [("k", descending), ("name", descending if field == "name" else False)])
        entries = [k["e"] for k in keyed]
    page = page_v5(entries, limit, starting_after, ending_before, id_of=lambda e: e.model.id)
    joined = b",".join(live_v5_bytes(e, status.get(e.model.object_name)) for e in page.pop("items"))
    rest = orjson.dumps(page)
    return b'{"items":[' + joined + b"]," + rest[1:]


@router.get("/models/{model_id}", summary="Get a model")
async def get_model(request: Request, model_id: str, who: Caller = Depends(caller)) -> Response:
    entry = visible_model(request, who, model_id)
    return json_response(live_v5_model(entry, status_of(request).get(entry.model.object_name)))
