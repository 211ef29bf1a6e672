"""The express lane: non-streamed typed inference answered at the HTTP protocol level.

Why: with every other cost cut, a proxied completion still spent most of the
API's CPU in the ASGI machinery around it: uvicorn's request cycle turning
ASGI messages into bytes, Starlette's and FastAPI's middleware stack, the
``Request`` and ``Response`` objects.  On the two-core benchmark machine that
held the proxy near a quarter of direct throughput (``docs/inference.md``,
Benchmark).

What: :class:`ExpressProtocol` *is* uvicorn's httptools protocol (keep-alive,
pipelining, flow control, limits, timeouts and graceful shutdown all stay
uvicorn's), with one change.  Where uvicorn would start the ASGI app for a
request, a ``POST`` to one of :data:`~.routes.TYPED_ROUTES` (v4 completions,
chat-completions, embeddings, rerankings; v5 chat/completions and
completions) runs :meth:`ExpressLane.serve` instead, which

1. waits for the body inside uvicorn's request cycle *without taking it*;
2. hands the request to the ASGI app exactly as uvicorn would have (nothing
   consumed, same behaviour) when the call streams, the body is over the
   limit, the client sent ``Expect: 100-continue``, the server has a root
   path, or an OpenTelemetry provider is configured (FastAPI traces requests
   then);
3. otherwise authenticates, checks and forwards with the very functions the
   FastAPI routes use (:func:`~..auth.authenticate`,
   :data:`~.routes.TYPED_ROUTES`, :func:`~.routes.typed`), writes the
   response's bytes itself, and records the same request metrics and access
   line as :class:`~..metrics.MetricsMiddleware`.

So the answers, errors (``ApiError`` shape, 429, 502-504, ``Retry-After``),
in-flight accounting and cold-start holds are those of the routes; only the
plumbing between the socket and them is shorter.  A client that disconnects
cancels the backend request at once: :meth:`ExpressProtocol.connection_lost`
cancels the guarded work.

Coupling: this subclasses uvicorn's ``HttpToolsProtocol`` and uses its
request cycle's fields (``body``, ``more_body``, ``message_event``,
``keep_alive``, ``response_complete``, ``on_response``).  ``pyproject.toml``
bounds uvicorn to the versions the tests ran on; ``serve --no-express`` turns
the lane off.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar, Optional

from fastapi import FastAPI
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from ..auth import authenticate
from ..errors import ApiError, error_response, unexpected_error
from .fast import match_fast_route
from .gateway import unless_gone
from .routes import CLIENT_GONE, TYPED_ROUTES, Prepare, decode_body, typed

class ExpressLane:
    """What the protocol needs of one app: its catalogue index, keys, gateway and metrics."""

    def __init__(self, app: FastAPI):
        state = app.state
        self.gateway = state.inference
        self.index = state.index
        self.keyring = state.keyring
        self.metrics = state.metrics
        # Requests go through the ASGI app while OpenTelemetry tracing is on, so they are traced.
        self.telemetry_on = getattr(app, "telemetry_on", lambda: False)

    def route(self, path: str) -> Optional[tuple[str, Prepare, tuple[str, ...]]]:
        """``(route template, its checks, path parameters)`` for a typed route, else ``None``."""
        hit = match_fast_route(path)
        if hit is None or self.telemetry_on():
            return None
        prepare = TYPED_ROUTES.get(hit[0])
        return None if prepare is None else (hit[0], prepare, hit[1])

    async def serve(self, protocol: "ExpressProtocol", cycle: RequestResponseCycle, app: Any, template: str,
                    prepare: Prepare, params: tuple[str, ...]) -> None:
        """Answer one request, or hand it to ``app`` untouched (see the module docstring)."""
        start = time.perf_counter()
        limit = self.gateway.settings.max_body_bytes
        if cycle.waiting_for_100_continue:
            await cycle.run_asgi(app)
            return
        while cycle.more_body and not cycle.disconnected:
            if len(cycle.body) > limit:
                await cycle.run_asgi(app)  # the route answers 413 as it always does
                return
            cycle.flow.resume_reading()
            await cycle.message_event.wait()
            if cycle.more_body:  # left set once the body is complete, for ``receive()``
                cycle.message_event.clear()
        if cycle.disconnected:  # left before sending the whole body: counted, as the route counts it
            self.metrics.record("POST", cycle.scope["path"], template, CLIENT_GONE, time.perf_counter() - start)
            return
        if len(cycle.body) > limit:
            await cycle.run_asgi(app)
            return
        # uvicorn stops reading past 64 KiB of body; read on, as ``receive()`` does, so that a
        # client that leaves while the model works is seen (``connection_lost``) at once.
        cycle.flow.resume_reading()
        scope = cycle.scope
        try:
            response = await self._answer(protocol, scope["headers"], cycle.body, prepare, params)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered 500 in the API's shape
            response = unexpected_error(scope["path"], exc)
        if response is None:
            await cycle.run_asgi(app)
            return
        status = response.status_code
        if status != CLIENT_GONE:
            await self._write(protocol, cycle, response)
        self.metrics.record("POST", scope["path"], template, status, time.perf_counter() - start)

    async def _answer(self, protocol: "ExpressProtocol", headers: list[tuple[bytes, bytes]], body: bytearray,
                      prepare: Prepare, params: tuple[str, ...]) -> Optional[Response]:
        """The response, or ``None`` if the ASGI app should answer (a streamed call)."""
        key = selected = None
        for name, value in headers:  # the first of repeated headers counts, as in Starlette's ``Headers``
            if name == b"x-api-key":
                if key is None:
                    key = value.decode("latin-1")
            elif name == b"x-selected-account-id":
                if selected is None:
                    selected = value.decode("latin-1")
        try:
            who = authenticate(self.keyring, key, selected)
            t = prepare(self.index, who, params, decode_body(body))
            if t.call.stream:
                return None
            return await typed(self.gateway, protocol.guard, t)
        except ApiError as exc:
            return error_response(exc)

    @staticmethod
    async def _write(protocol: "ExpressProtocol", cycle: RequestResponseCycle, response: Response) -> None:
        """Send ``response`` and close the cycle as uvicorn's ``send`` does for a complete body."""
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if cycle.disconnected:
            return
        out = [STATUS_LINE[response.status_code]]
        for name, value in protocol.server_state.default_headers:
            out += (name, b": ", value, b"\r\n")
        for name, value in response.raw_headers:
            out += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            out.append(b"connection: close\r\n")
        out += (b"\r\n", response.body)
        cycle.transport.write(b"".join(out))
        cycle.response_started = cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()


class ExpressProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the express lane (see the module docstring).

    Made per app by :func:`express_protocol`, which sets :attr:`lane`.
    """

    lane: ClassVar[ExpressLane]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._guarded: Optional[asyncio.Task[Any]] = None
        self._gone = False

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        scope = cycle.scope
        hit = self.lane.route(scope["path"]) if scope["method"] == "POST" and app is self.app \
            and not self.root_path else None
        if hit is None:
            super()._start_asgi_task(cycle, app)
            return
        task = self.loop.create_task(self.lane.serve(self, cycle, app, *hit))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def guard(self, work: Any) -> Any:
        """The express :data:`~.routes.Guard`: ``work``, cancelled if the connection is lost meanwhile."""
        task = asyncio.current_task()
        assert task is not None
        self._guarded = task
        try:
            return await unless_gone(task, work, lambda: self._gone)
        finally:
            self._guarded = None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        super().connection_lost(exc)
        if self._guarded is not None and not self._gone:
            self._gone = True
            self._guarded.cancel()


def express_protocol(app: FastAPI) -> type[ExpressProtocol]:
    """The uvicorn ``http`` protocol class for ``app`` (which must have inference installed)."""
    return type("ExpressProtocol", (ExpressProtocol,), {"lane": ExpressLane(app)})
