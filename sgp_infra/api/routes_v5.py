"""SGP v5 reads: ``GET /v5/models`` and ``GET /v5/models/{model_id}``.

Cursor pagination as the official ``scale-gp-beta`` client drives it.  The
default order is by ``name`` ascending (ids are opaque, and ``created_at`` ties
outside a cluster); ``sort_by`` takes any top-level field of a model.
"""

from __future__ import annotations

from typing import Literal, Optional

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from .auth import Caller, caller
from .common import index_of, json_response, live_v5_model, status_of, visible_model
from .errors import ApiError
from .paging import DEFAULT_LIMIT, MAX_LIMIT, page_v5, sort_items

router = APIRouter(prefix="/v5", tags=["v5"])


@router.get("/models", summary="List models")
async def list_models(
    request: Request,
    who: Caller = Depends(caller),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="items per page"),
    starting_after: Optional[str] = Query(None, description="the id of the item before the page"),
    ending_before: Optional[str] = Query(None, description="the id of the item after the page"),
    name: Optional[str] = Query(None, description="only the model with this name"),
    model_vendor: Optional[str] = Query(None, description="only models of this vendor (here: launch)"),
    sort_by: Optional[str] = Query(None, description="a model field (default: name)"),
    sort_order: Literal["asc", "desc"] = Query("asc"),
) -> Response:
    status = status_of(request)
    entries = [e for e in index_of(request).models if who.can_see(e.model.account_id)]
    if name is not None:
        entries = [e for e in entries if e.model.name == name]
    if model_vendor is not None:
        entries = [e for e in entries if e.v5["model_vendor"] == model_vendor]
    items = [live_v5_model(e, status.get(e.model.object_name)) for e in entries]
    field = sort_by or "name"
    if items and field not in items[0]:
        raise ApiError(422, f"invalid sort_by {field!r}: use a model field such as name, created_at, status, id")
    if field != "name" or sort_order == "desc":  # entries are already in name order
        items = sort_items(items, [(field, sort_order == "desc"), ("name", False)] if field != "name"
                           else [("name", True)])
    return json_response(page_v5(items, limit, starting_after, ending_before))


@router.get("/models/{model_id}", summary="Get a model")
async def get_model(request: Request, model_id: str, who: Caller = Depends(caller)) -> Response:
    entry = visible_model(request, who, model_id)
    return json_response(live_v5_model(entry, status_of(request).get(entry.model.object_name)))
