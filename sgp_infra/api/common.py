"""Helpers every route module shares: state access, JSON responses, visibility."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import orjson
from fastapi import Request
from starlette.responses import Response

from ..catalog import Model
from .auth import Caller
from .errors import ApiError
from .status import ModelStatus, StatusSource
from .views import V4_STATUS, CatalogIndex, ModelEntry, live_created_at


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def model_base_url(model: Model, backends: Mapping[str, str], namespace: str) -> str:
    """Where a model answers: its ``serve --backend`` override (by name or object
    name; the first URL of a ``URL1,URL2`` list), else its in-cluster Service; no
    trailing slash."""
    url = backends.get(model.name) or backends.get(model.object_name)
    if url is None:
        url = f"http://{model.object_name}.{namespace}.svc.cluster.local"
    return url.split(",", 1)[0].strip().rstrip("/")


def index_of(request: Request) -> CatalogIndex:
    return request.app.state.index


def status_of(request: Request) -> StatusSource:
    return request.app.state.status


def visible(items: Iterable[dict[str, Any]], caller: Caller, account_id: Optional[str] = None) -> list[dict[str, Any]]:
    """Items the caller may see, optionally narrowed to ``account_id``."""
    accounts = caller.accounts if not account_id else caller.accounts & {account_id}
    return [i for i in items if i["account_id"] in accounts]


def seen_or_404(item: Any, account_id: Optional[str], caller: Caller, noun: str, ref: str) -> Any:
    """``item`` if it exists in an account the caller may see, else a 404 ApiError.

    An entity of an account the caller cannot see is reported exactly like
    one that does not exist, so a 404 never confirms another account's entity.
    """
    if item is None or account_id is None or not caller.can_see(account_id):
        raise ApiError(404, f"no {noun} '{ref}' in the accounts this API key may see")
    return item


def visible_model(request: Request, caller: Caller, ref: str) -> ModelEntry:
    """The model named ``ref`` (name, id or deployment id), or a 404 ApiError."""
    return visible_model_in(index_of(request), caller, ref)


def visible_model_in(index: CatalogIndex, caller: Caller, ref: str) -> ModelEntry:
    """:func:`visible_model` given the catalogue index rather than the request."""
    entry = index.model(ref)
    return seen_or_404(entry, entry.model.account_id if entry else None, caller, "model", ref)


def live_v4_model(entry: ModelEntry, st: ModelStatus) -> dict[str, Any]:
    out = dict(entry.v4)
    out["created_at"] = live_created_at(entry, st, entry.v4)
    return out


def live_v5_model(entry: ModelEntry, st: ModelStatus) -> dict[str, Any]:
    out = dict(entry.v5)
    out["created_at"] = live_created_at(entry, st, entry.v5)
    out["status"] = st.status
    out["status_reason"] = st.reason
    return out


def live_v5_bytes(entry: ModelEntry, st: ModelStatus) -> bytes:
    """:func:`live_v5_model` serialised: the precomputed prefix plus the live fields.

    Status objects are immutable and replaced on refresh, so the bytes are
    reused for as long as the source hands out the same status object.
    """
    cached = entry.v5_live
    if cached is not None and cached[0] is st:
        return cached[1]
    live = orjson.dumps({"created_at": live_created_at(entry, st, entry.v5), "status": st.status,
                         "status_reason": st.reason})
    body = entry.v5_prefix + b"," + live[1:]
    entry.v5_live = (st, body)
    return body


def live_deployment(entry: ModelEntry, st: ModelStatus) -> dict[str, Any]:
    out = dict(entry.deployment)
    out["created_at"] = live_created_at(entry, st, entry.deployment)
    out["status"] = V4_STATUS[st.status]
    out["deployment_metadata"] = {**out["deployment_metadata"], "status_reason": st.reason,
                                  "ready_replicas": st.ready_replicas}
    return out
