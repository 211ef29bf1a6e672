"""The API's one error shape, and handlers that force every failure into it.

Every error the service returns is JSON with the same keys::

    {"status": 404, "error": "not_found", "detail": "no model 'x' in your accounts"}

plus route-specific extras (a 405 names the stack config path to edit).  The
official clients surface ``detail`` in their exception messages.  Validation
errors, unknown routes and unexpected exceptions go through the same shape, so
a client never sees an HTML page or a traceback.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("sgp_infra.api")


class ApiError(Exception):
    """Raise from any route or dependency to answer with the error shape."""

    def __init__(self, status: int, detail: str, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


#: Statuses whose phrase Python 3.13 renamed (RFC 9110: "Unprocessable Content"...): their
#: codes keep the names of 3.10-3.12, so an answer does not depend on the server's Python.
_RENAMED_IN_3_13 = {413: "request_entity_too_large", 414: "request_uri_too_long",
                    416: "requested_range_not_satisfiable", 422: "unprocessable_entity"}


def error_code(status: int) -> str:
    """``404`` → ``not_found``: a stable, machine-readable name of the status."""
    if status in _RENAMED_IN_3_13:
        return _RENAMED_IN_3_13[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def api_error(status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """A JSON error response in the API's shape."""
    body = {"status": status, "error": error_code(status), "detail": detail, **extra}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: ApiError) -> Response:
    """The response for a raised :class:`ApiError` (``WWW-Authenticate`` on 401, ``Allow`` if given)."""
    headers = {"WWW-Authenticate": "x-api-key"} if exc.status == 401 else None
    allow = exc.extra.pop("allow", None)
    if allow:
        headers = {**(headers or {}), "Allow": allow}
    return api_error(exc.status, exc.detail, headers=headers, **exc.extra)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        detail = f"no route {request.method} {request.url.path}; see /docs for the routes this service answers"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    else:
        detail = str(exc.detail)
    return api_error(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "invalid"))}
        for err in exc.errors()
    ]
    text = "; ".join(f"{'.'.join(p['loc'][1:]) or p['loc'][0]}: {p['msg']}" for p in problems)
    return api_error(422, f"invalid request: {text}", problems=problems)


async def _unexpected(request: Request, exc: Exception) -> Response:
    return unexpected_error(request.url.path, exc)


def unexpected_error(path: str, exc: BaseException) -> Response:
    """Log a bug (without the request's headers: they carry the API key) and answer 500 in the error shape."""
    log.error("unhandled error", extra={"path": path, "error": type(exc).__name__}, exc_info=exc)
    return api_error(500, "internal error; the service logged it")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
