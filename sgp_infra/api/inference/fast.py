"""A plain ASGI fast path for the inference ``POST`` routes, ahead of FastAPI's router.

Why: on the benchmark machine FastAPI's routing (a regex per route, in order),
dependency injection and its per-request exit stacks cost more than the whole
forwarding work, and capped the proxy near 0.2 of direct throughput.

What it does: ``create_app`` installs :class:`FastPath` as the innermost user
middleware, *inside* :class:`~sgp_infra.api.metrics.MetricsMiddleware` and
Starlette's ``ServerErrorMiddleware``.  For ``POST`` to one of the routes in
:data:`~.routes.FAST_ROUTES` it

* matches the path with string operations (same rule as Starlette's
  ``{param}``: one non-empty segment);
* puts the same ``route``, ``endpoint`` and ``path_params`` in the scope as the
  router would, so the metrics label and access log line are unchanged;
* authenticates with the same :func:`~sgp_infra.api.auth.authenticate` the
  ``caller`` dependency uses;
* calls the very endpoint function FastAPI would call, and turns an
  :class:`~sgp_infra.api.errors.ApiError` into the same response as the app's
  handler.  Any other exception propagates to ``ServerErrorMiddleware`` and
  its 500 handler, exactly as before.

Anything else (other methods, other paths, a ``root_path``) goes to FastAPI
unchanged, so 404/405/redirect behaviour and the OpenAPI document are those
of the router.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import authenticate
from ..errors import ApiError, error_response
from .routes import FAST_ROUTES, V4_FAST_OPS, router

_V4_PREFIX = "/v4/models/"


def match_fast_route(path: str) -> Optional[tuple[str, tuple[str, ...]]]:
    """``(route template, path parameters)`` if ``path`` is a fast route's, else ``None``."""
    if path.startswith(_V4_PREFIX):
        parts = path[len(_V4_PREFIX):].split("/")
        if len(parts) == 2 and parts[0] and parts[1] in V4_FAST_OPS:
            return V4_FAST_OPS[parts[1]], (parts[0],)
        if len(parts) == 4 and parts[0] and parts[1] == "deployments" and parts[2] and parts[3] == "execute":
            return "/v4/models/{model_instance_id}/deployments/{deployment_id}/execute", (parts[0], parts[2])
        return None
    if path in FAST_ROUTES and "{" not in path:
        return path, ()
    return None


class FastPath:
    def __init__(self, app: ASGIApp, api: FastAPI):
        self.app = app
        self.api = api
        self._routes: Optional[dict[str, tuple[APIRoute, Callable[..., Any]]]] = None

    def _table(self) -> dict[str, tuple[APIRoute, Callable[..., Any]]]:
        """Template → (the inference router's APIRoute, its endpoint), built on first use."""
        if self._routes is None:
            # The inference router is included without a prefix: its templates are the app's.
            routes = {r.path: r for r in router.routes if isinstance(r, APIRoute) and "POST" in r.methods}
            self._routes = {path: (routes[path], routes[path].endpoint) for path in FAST_ROUTES if path in routes}
        return self._routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        hit = match_fast_route(scope["path"])
        entry = self._table().get(hit[0]) if hit is not None else None
        if entry is None:
            await self.app(scope, receive, send)
            return
        route, endpoint = entry
        params = hit[1]  # type: ignore[index]
        scope["route"] = route
        scope["endpoint"] = endpoint
        scope["path_params"] = dict(zip(route.param_convertors, params))
        request = Request(scope, receive)
        try:
            headers = request.headers
            who = authenticate(self.api.state.keyring, headers.get("x-api-key"),
                               headers.get("x-selected-account-id"))
            response = await endpoint(request, *params, who=who)
        except ApiError as exc:
            response = error_response(exc)
        await response(scope, receive, send)
