"""SGP v4 reads: model templates, models, model groups, model deployments.

Shapes and parameters follow the official ``scale-gp`` client.  Every route
needs a key; lists show only the caller's accounts; a retrieve of anything
else is a 404.  Templates and groups take their ``created_at`` from their
earliest model in the cluster (see ``views``).
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from .auth import Caller, caller
from .common import (index_of, json_response, live_deployment, live_v4_model, seen_or_404, status_of,
                     visible, visible_model)
from .errors import ApiError
from .paging import DEFAULT_LIMIT, MAX_LIMIT, page_v4, parse_v4_sort, sort_items
from .views import LOCAL_CREATED_AT

router = APIRouter(prefix="/v4", tags=["v4"])

Limit = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="items per page (at most 10,000)")
Page = Query(1, ge=1, le=1_000_000, description="page number, from 1")
AccountId = Query(None, description="only this account's entities")
SortBy = Query(None, description="<field>:asc or <field>:desc, repeated or comma-separated")


def _split(values: Optional[list[str]]) -> list[str]:
    return [v for raw in values or () for v in raw.split(",") if v]


def _earliest(request: Request, names: set[str], fallback: str) -> str:
    """``created_at`` of a template or group: its earliest model in the cluster."""
    if fallback != LOCAL_CREATED_AT:
        return fallback
    status = status_of(request)
    times = [t for e in index_of(request).models if e.model.name in names
             for t in [status.get(e.model.object_name).created_at] if t]
    return min(times, default=status.catalog_created_at() or fallback)


def _live_template(request: Request, item: dict[str, Any]) -> dict[str, Any]:
    names = index_of(request).template_member_names(item["id"])
    return {**item, "created_at": _earliest(request, names, item["created_at"])}


def _live_group(request: Request, item: dict[str, Any]) -> dict[str, Any]:
    names = index_of(request).group_member_names(item["id"])
    return {**item, "created_at": _earliest(request, names, item["created_at"])}


def _list(items: list[dict[str, Any]], page: int, limit: int, sort_by: Optional[list[str]]) -> Response:
    if sort_by and items:  # an empty list has nothing to sort by
        items = sort_items(items, parse_v4_sort(sort_by, set(items[0])))
    return json_response(page_v4(items, page, limit))


# --- model templates ------------------------------------------------------------


@router.get("/model-templates", summary="List model templates")
async def list_model_templates(request: Request, who: Caller = Depends(caller), account_id: Optional[str] = AccountId,
                               limit: int = Limit, page: int = Page) -> Response:
    items = [_live_template(request, t) for t in visible(index_of(request).templates, who, account_id)]
    return _list(items, page, limit, None)


@router.get("/model-templates/{model_template_id}", summary="Get a model template")
async def get_model_template(request: Request, model_template_id: str, who: Caller = Depends(caller)) -> Response:
    item = index_of(request).template(model_template_id)
    item = seen_or_404(item, item["account_id"] if item else None, who, "model template", model_template_id)
    return json_response(_live_template(request, item))


# --- models -------------------------------------------------------------------------


def _model_body(request: Request, entry: Any, views: list[str]) -> dict[str, Any]:
    st = status_of(request).get(entry.model.object_name)
    body = live_v4_model(entry, st)
    if "Deployments" in views:
        body["deployments"] = [live_deployment(entry, st)]
    if "ModelGroup" in views:
        group = index_of(request).group(body["model_group_id"]) if body["model_group_id"] else None
        body["model_group"] = _live_group(request, group) if group else None
    return body


def _check_views(views: list[str]) -> list[str]:
    bad = [v for v in views if v not in ("Deployments", "ModelGroup")]
    if bad:
        raise ApiError(422, f"unknown view {bad[0]!r}: use Deployments or ModelGroup")
    return views


@router.get("/models", summary="List models")
async def list_models(request: Request, who: Caller = Depends(caller), account_id: Optional[str] = AccountId,
                      limit: int = Limit, page: int = Page,
                      model_group_id: Optional[str] = Query(None, description="a group's id or name"),
                      model_type: Optional[str] = Query(None, description="e.g. COMPLETION"),
                      sort_by: Optional[list[str]] = SortBy,
                      view: Optional[list[str]] = Query(None, description="Deployments and/or ModelGroup")
                      ) -> Response:
    views = _check_views(_split(view))
    index = index_of(request)
    entries = [e for e in index.models if who.can_see(e.model.account_id)
               and (not account_id or e.model.account_id == account_id)]
    if model_type:
        entries = [e for e in entries if e.v4["model_type"] == model_type.upper()]
    if model_group_id:
        group = index.group(model_group_id)
        gid = group["id"] if group else model_group_id
        entries = [e for e in entries if e.v4["model_group_id"] == gid]
    items = [_model_body(request, e, views) for e in entries]
    return _list(items, page, limit, sort_by)


@router.get("/models/{model_id}", summary="Get a model")
async def get_model(request: Request, model_id: str, who: Caller = Depends(caller),
                    view: Optional[list[str]] = Query(None)) -> Response:
    entry = visible_model(request, who, model_id)
    return json_response(_model_body(request, entry, _check_views(_split(view))))


# --- model groups -----------------------------------------------------------------


@router.get("/model-groups", summary="List model groups")
async def list_model_groups(request: Request, who: Caller = Depends(caller), account_id: Optional[str] = AccountId,
                            limit: int = Limit, page: int = Page) -> Response:
    items = [_live_group(request, g) for g in visible(index_of(request).groups, who, account_id)]
    return _list(items, page, limit, None)


@router.get("/model-groups/{model_group_id}", summary="Get a model group")
async def get_model_group(request: Request, model_group_id: str, who: Caller = Depends(caller)) -> Response:
    item = index_of(request).group(model_group_id)
    item = seen_or_404(item, item["account_id"] if item else None, who, "model group", model_group_id)
    return json_response(_live_group(request, item))


# --- deployments -------------------------------------------------------------------


def _deployments(request: Request, who: Caller, account_id: Optional[str], model_ref: Optional[str]
                 ) -> list[dict[str, Any]]:
    status = status_of(request)
    if model_ref is not None:
        entries = [visible_model(request, who, model_ref)]
    else:
        entries = [e for e in index_of(request).models if who.can_see(e.model.account_id)]
    return [live_deployment(e, status.get(e.model.object_name)) for e in entries
            if not account_id or e.model.account_id == account_id]


@router.get("/models/{model_instance_id}/deployments", summary="List a model's deployments")
async def list_model_deployments(request: Request, model_instance_id: str, who: Caller = Depends(caller),
                                 account_id: Optional[str] = AccountId, limit: int = Limit, page: int = Page,
                                 sort_by: Optional[list[str]] = SortBy) -> Response:
    return _list(_deployments(request, who, account_id, model_instance_id), page, limit, sort_by)


@router.get("/models/{model_instance_id}/deployments/{deployment_id}", summary="Get a model deployment")
async def get_model_deployment(request: Request, model_instance_id: str, deployment_id: str,
                               who: Caller = Depends(caller)) -> Response:
    entry = visible_model(request, who, model_instance_id)
    if deployment_id not in (entry.deployment["id"], entry.deployment["name"]):
        raise ApiError(404, f"model '{model_instance_id}' has no deployment '{deployment_id}'")
    return json_response(live_deployment(entry, status_of(request).get(entry.model.object_name)))


@router.get("/model-deployments", summary="List all model deployments")
async def list_all_deployments(request: Request, who: Caller = Depends(caller), account_id: Optional[str] = AccountId,
                               limit: int = Limit, page: int = Page, sort_by: Optional[list[str]] = SortBy
                               ) -> Response:
    return _list(_deployments(request, who, account_id, None), page, limit, sort_by)
