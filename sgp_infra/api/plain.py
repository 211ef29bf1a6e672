"""Hot routes served as plain Starlette routes, matched before the FastAPI ones.

A FastAPI route costs several times the CPU of a Starlette one per request
(dependency resolution, its request wrappers, and matching through every
included router before it).  A hot route that needs none of that -- the
caller was authenticated at the request head (``guard.RequestGuard``), its
path parameters are strings, and it reads its own body and query -- is
declared as an ordinary FastAPI route (the OpenAPI document describes it)
and also served by a plain Starlette route calling the very same endpoint,
registered first, which is the one that answers.

Used by the inference POST routes and the async-task routes.
"""

from __future__ import annotations

import inspect
from typing import Awaitable, Callable

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path

from .auth import caller_in
from .errors import ApiError


def plain_routes(router: APIRouter, methods: frozenset[str] = frozenset({"POST"})) -> list[Route]:
    """The routes of ``router`` (with one of ``methods``) as plain Starlette routes, for the app to serve first.

    Only endpoints taking exactly ``request``, their path parameters and
    ``who`` are served this way; any other route (query parameters declared
    to FastAPI, say) is left to FastAPI alone.
    """
    plain = []
    for route in router.routes:
        if not isinstance(route, APIRoute) or not route.methods or not route.methods <= methods:
            continue
        params = set(compile_path(route.path)[2])
        if set(inspect.signature(route.endpoint).parameters) != {"request", "who", *params}:
            continue
        plain.append(Route(route.path, _plain_endpoint(route), methods=sorted(route.methods), name=route.name,
                           include_in_schema=False))
    return plain


def serve_plain(app: FastAPI, routes: list[Route], *, first: bool = False) -> None:
    """Add ``routes`` to ``app`` (call it before including the routers they must be matched before).

    ``first``: match them before every route already there, for routes whose paths no other route
    answers: a request is matched against the routes in order, each a regular expression, so the
    hottest paths cost least at the front.
    """
    for route in routes:
        app.router.add_route(route.path, route.endpoint, methods=route.methods, name=route.name,
                             include_in_schema=False)
    if first and routes:
        added = app.router.routes[-len(routes):]
        del app.router.routes[-len(routes):]
        app.router.routes[:0] = added


def _plain_endpoint(route: APIRoute) -> Callable[[Request], Awaitable[Response]]:
    endpoint = route.endpoint

    async def serve(request: Request) -> Response:
        # The route template for the access line and the metrics (as FastAPI sets it for its own routes).
        request.scope["route"] = route
        who = caller_in(request.scope)
        if who is None:
            raise ApiError(401, "missing x-api-key header; send your sgp-infra API key in it")
        return await endpoint(request, who=who, **request.path_params)

    return serve
