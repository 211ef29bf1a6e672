"""The per-request access line: one JSON log record per answered request.

:func:`log_request` logs ``request`` at INFO on ``sgp_infra.api.access`` with
``method``, ``path``, ``route`` (the route template, ``unmatched`` when no
route ran), ``status`` and ``duration_ms``, through stock :mod:`logging`
(formatted by ``logs.JsonFormatter`` under ``serve``).  It is called by the
app's one recording middleware (``metrics.MetricsMiddleware``), which times
and counts every request once for both the metrics and this line.  Headers are
never logged: they carry the API key.  ``serve --no-access-log`` raises the
logger's level, and the record is then skipped entirely.
"""

from __future__ import annotations

import logging

from starlette.types import Scope

from .logs import ACCESS_LOGGER

log = logging.getLogger(ACCESS_LOGGER)


def route_of(scope: Scope) -> str:
    """The matched route's template (``/v4/models/{model_id}``), else ``unmatched``."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


def access_log_on() -> bool:
    """Whether access lines are written (checked once per request)."""
    return log.isEnabledFor(logging.INFO)


def log_request(scope: Scope, route: str, status: int, seconds: float) -> None:
    """Write one request's access line."""
    log.info("request", extra={"method": scope["method"], "path": scope["path"], "route": route,
                               "status": status, "duration_ms": round(seconds * 1000, 3)})
