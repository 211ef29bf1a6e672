"""Checks made at the request head, before any route runs or any body byte is read.

:class:`RequestGuard` is a plain ASGI middleware (no ``BaseHTTPMiddleware``
task or stream wrapping) around the whole app.  For each HTTP request it:

* authenticates ``x-api-key`` / ``x-selected-account-id`` with
  :func:`~sgp_infra.api.auth.authenticate` on every route except the open
  ones (health, readiness, metrics, the OpenAPI document and its pages), and
  answers 401/403 in the error shape without reading the body.  The
  :class:`~sgp_infra.api.auth.Caller` goes into the request's ASGI state,
  where the ``caller`` dependency reads it: auth is decided here, once, from
  the request head only.  Trailers arrive with the body, after this check, so
  they can never authenticate a request;
* answers 413 when ``Content-Length`` is over the body limit, without
  reading the body;
* counts the bytes of a body without ``Content-Length`` (chunked) as the
  route reads them, and raises :class:`BodyTooLarge` (a 413 in the error
  shape) once they pass the limit.  uvicorn reads a body only as the app asks
  for it (it pauses the socket above 64 KiB buffered), so a body is never held
  beyond the limit plus one buffer.

A rejected request with a chunked body or one over 64 KiB gets
``Connection: close``: the server then closes the connection rather than
reading the rest of the body to reach the next request.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import CALLER_KEY, authenticate
from .errors import ApiError, error_response

#: Largest announced body of a rejected request after which the connection stays open (uvicorn drops it).
KEEP_ALIVE_AFTER = 64 * 1024

#: Routes anyone may call: probes, Prometheus, and the OpenAPI document and its pages.
OPS_PATHS = ("/healthz", "/readyz", "/metrics")


class BodyTooLarge(StarletteHTTPException):
    """A streamed request body passed the limit: a 413 in the error shape, and the connection is closed.

    An ``HTTPException``, so FastAPI's body parsing passes it on unchanged
    (it turns other exceptions into a 400) to the app's error handler.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the {limit:,}-byte limit of this API",
                         headers={"Connection": "close"})


def open_paths(app: Any) -> frozenset[str]:
    """The paths :class:`RequestGuard` lets through without a key, for a FastAPI ``app``."""
    docs = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    return frozenset((*OPS_PATHS, *(p for p in docs if p)))


class RequestGuard:
    """Auth and the body limit at the request head; see the module doc.

    ``state`` is the app's state (its ``keyring`` is read per request, so a
    replaced keyring applies at once); ``open`` the paths needing no key.
    """

    def __init__(self, app: ASGIApp, *, state: Any, max_body_bytes: int, open: Iterable[str]) -> None:
        self.app = app
        self.state = state
        self.max_body_bytes = max_body_bytes
        self.open = frozenset(open)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The first of repeated fields counts, as Starlette's ``request.headers.get`` reads them.
        api_key: Optional[bytes] = None
        selected: Optional[bytes] = None
        length: Optional[bytes] = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                if api_key is None:
                    api_key = value
            elif name == b"x-selected-account-id":
                if selected is None:
                    selected = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        # A rejected request whose body uvicorn would have to read (and drop) to reach the next request
        # closes the connection instead; a small announced body is dropped and the connection kept.
        close = chunked or (length is not None and _over(length, KEEP_ALIVE_AFTER))
        if scope["path"] not in self.open:
            try:
                who = authenticate(self.state.keyring, api_key.decode("latin-1") if api_key else None,
                                   selected.decode("latin-1") if selected else None)
            except ApiError as exc:
                await self._reject(exc, close, scope, receive, send)
                return
            scope.setdefault("state", {})[CALLER_KEY] = who
        if length is not None and _over(length, self.max_body_bytes):
            await self._reject(ApiError(413, f"the request body ({length.decode('latin-1')} bytes) is over the "
                                             f"{self.max_body_bytes:,}-byte limit of this API"),
                               True, scope, receive, send)
            return
        if not chunked:
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _counted(receive, self.max_body_bytes), watched)
        except BodyTooLarge as exc:  # raised where no error handler answers it (e.g. a middleware)
            if started:
                raise
            await self._reject(ApiError(413, str(exc.detail)), True, scope, receive, send)

    async def _reject(self, exc: ApiError, close: bool, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(exc)
        if close:
            response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _over(length: bytes, limit: int) -> bool:
    """Whether an announced ``Content-Length`` is over ``limit`` (the server already rejected a malformed one)."""
    try:
        return int(length) > limit
    except ValueError:
        return False


def _counted(receive: Receive, limit: int) -> Receive:
    """``receive``, raising :class:`BodyTooLarge` once the body's bytes pass ``limit``."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted
