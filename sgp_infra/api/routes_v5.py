"""SGP v5 reads: ``GET /v5/models`` and ``GET /v5/models/{model_id}``.

Cursor pagination as the official ``scale-gp-beta`` client drives it.  The
default order is by ``name`` ascending (ids are opaque, and ``created_at`` ties
outside a cluster); ``sort_by`` takes any top-level field of a model.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
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


@router.get("/models", summary="List models")
async def list_models(request: Request, params: Annotated[ListParams, Query()],
                      who: Caller = Depends(caller)) -> Response:
    status = status_of(request)
    # The catalogue never changes while the service runs and status changes
    # only on a refresh (``status.version``), so a page is cached per query,
    # caller accounts and status version.
    cache: dict[tuple[object, ...], bytes] = request.app.state.v5_page_cache
    version = getattr(status, "version", None)
    if version is None:  # a source that does not version its answers: no caching
        return Response(_list_body(request, params, who), media_type="application/json")
    key = (who.accounts, version, *params.__dict__.values())
    body = cache.get(key)
    if body is None:
        body = _list_body(request, params, who)
        if len(cache) >= 512:
            cache.clear()
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
