"""The per-request access line: one JSON log record per answered request.

A plain ASGI middleware (no ``BaseHTTPMiddleware`` task or stream wrapping)
that logs ``request`` at INFO on ``sgp_infra.api.access`` with ``method``,
``path``, ``route`` (the route template, ``unmatched`` when no route ran),
``status`` and ``duration_ms``, through stock :mod:`logging` (formatted by
``logs.JsonFormatter`` under ``serve``).  Headers are never logged: they carry
the API key.  ``serve --no-access-log`` raises the logger's level, and the
middleware then skips the record entirely.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import ACCESS_LOGGER

log = logging.getLogger(ACCESS_LOGGER)


def route_of(scope: Scope) -> str:
    """The matched route's template (``/v4/models/{model_id}``), else ``unmatched``."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            log.info("request", extra={"method": scope["method"], "path": scope["path"], "route": route_of(scope),
                                       "status": status,
                                       "duration_ms": round((time.perf_counter() - start) * 1000, 3)})
