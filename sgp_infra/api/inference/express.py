"""The express lane: non-streamed typed inference answered at the HTTP protocol level.

Why: with every other cost cut, a proxied completion still spent most of the
API's CPU in the machinery around it: first the ASGI stack (Starlette's and
FastAPI's middleware, the ``Request`` and ``Response`` objects), then, once
that was bypassed, uvicorn's per-request objects (the ASGI scope, the request
cycle and its event, the URL parse).  On the two-core benchmark machine each
held the proxy further below direct throughput (``docs/inference.md``,
Benchmark).

What: :class:`ExpressProtocol` *is* uvicorn's httptools protocol (connection
handling, keep-alive timeout, pipelining queue, flow control and graceful
shutdown all stay uvicorn's), with one change.  When a request's headers are
complete and it is a ``POST`` to one of :data:`~.routes.TYPED_ROUTES` (v4
completions, chat-completions, embeddings, rerankings; v5 chat/completions and
completions), and nothing asks for the general path (no earlier request still
being answered on the connection, no ``Expect: 100-continue``, no root path,
no OpenTelemetry provider, no upgrade), the protocol takes the request as a
:class:`LeanRequest` instead of building uvicorn's scope and request cycle:
it keeps the body, and when the body is complete :meth:`ExpressLane.serve`

1. authenticates, checks and forwards with the very functions the FastAPI
   routes use (:func:`~..auth.authenticate`, :data:`~.routes.TYPED_ROUTES`,
   :func:`~.routes.typed`);
2. writes the response's bytes itself and records the same request metrics
   and access line as :class:`~..metrics.MetricsMiddleware`.

A request that turns out to need the ASGI app (the call streams, or the body
goes over the limit, which the route answers with 413) is handed over *as
uvicorn would have built it*: the lean request becomes a uvicorn request cycle
with the same scope and the body read so far (:meth:`ExpressProtocol._to_asgi`),
and the app answers it as it answers every other request.

So the answers, errors (``ApiError`` shape, 429, 502-504, ``Retry-After``),
in-flight accounting and cold-start holds are those of the routes; only the
plumbing between the socket and them is shorter.  A client that disconnects
cancels the backend request at once: :meth:`ExpressProtocol.connection_lost`
cancels the guarded work, and a client that leaves before its body is
complete is counted as 499, as the route counts it.

Coupling: this subclasses uvicorn's ``HttpToolsProtocol``; it overrides the
parser callbacks and hands requests over through ``RequestResponseCycle``,
whose scope it builds the way ``on_message_begin``/``on_headers_complete``
do.  ``pyproject.toml`` bounds uvicorn to the versions the tests ran on
(``tests/test_inference_express.py`` compares every observable with uvicorn's
own protocol); ``serve --no-express`` turns the lane off.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import Any, ClassVar, Optional

import httptools
from fastapi import FastAPI
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from ..auth import authenticate
from ..errors import ApiError, error_response, unexpected_error
from .fast import match_fast_route
from .gateway import unless_gone
from .routes import CLIENT_GONE, TYPED_ROUTES, Prepare, decode_body, typed

#: What the lane keeps of a typed route's URL: (template, checks, path parameters, path, raw path, query).
Hit = tuple[str, Prepare, tuple[str, ...], str, bytes, bytes]
#: Distinct URLs whose routing is remembered (model names make URLs open-ended; past this, each is routed anew).
ROUTE_CACHE_SIZE = 4096


class _NoEvent:
    """A lean request's ``message_event``: uvicorn's ``connection_lost`` sets it; nothing waits on it."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class LeanRequest(RequestResponseCycle):
    """A request the lane answers: only what the lane and uvicorn's protocol read of a cycle.

    It stands in ``protocol.cycle`` while it is answered, so uvicorn's own
    checks (is a response in progress? ``connection_lost``, ``shutdown``)
    see it as they would see a cycle.  :meth:`ExpressProtocol._to_asgi` makes
    it a full ``RequestResponseCycle`` when the ASGI app must answer.
    """

    def __init__(self, hit: Hit, headers: list[tuple[bytes, bytes]], http_version: str, keep_alive: bool,
                 start: float):  # noqa: D107 - deliberately not RequestResponseCycle.__init__ (see the class)
        self.hit = hit
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.start = start
        self.body = bytearray()
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.message_event = _NO_EVENT  # type: ignore[assignment]


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
        self._routes: dict[bytes, Optional[Hit]] = {}

    def route(self, url: bytes) -> Optional[Hit]:
        """The typed route ``url`` asks for, else ``None`` (remembered per URL; see :data:`ROUTE_CACHE_SIZE`)."""
        hit = self._routes.get(url, False)
        if hit is False:
            hit = _route_url(url)
            if len(self._routes) < ROUTE_CACHE_SIZE:
                self._routes[url] = hit
        if hit is None or self.telemetry_on():
            return None
        return hit

    async def serve(self, protocol: "ExpressProtocol", request: LeanRequest) -> None:
        """Answer ``request`` (its body is complete), or hand it to the ASGI app (see the module docstring)."""
        template, prepare, params, path = request.hit[:4]
        try:
            response = await self._answer(protocol, request.headers, request.body, prepare, params)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered 500 in the API's shape
            response = unexpected_error(path, exc)
        if response is None:  # a streamed call
            await protocol.to_asgi(request).run_asgi(protocol.app)
            return
        status = response.status_code
        if status != CLIENT_GONE:
            await protocol.write(request, response)
        self.metrics.record("POST", path, template, status, time.perf_counter() - request.start)

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


def _route_url(url: bytes) -> Optional[Hit]:
    """Route ``url`` as uvicorn and :func:`~.fast.match_fast_route` would.

    A typed route's :data:`Hit`, else ``None`` (then uvicorn and the ASGI app handle the request as ever).
    """
    try:
        parsed = httptools.parse_url(url)
        raw_path = parsed.path
        path = raw_path.decode("ascii")
    except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
        return None  # uvicorn's own handling decides
    if "%" in path:
        path = urllib.parse.unquote(path)
    hit = match_fast_route(path)
    prepare = TYPED_ROUTES.get(hit[0]) if hit is not None else None
    if hit is None or prepare is None:
        return None
    return hit[0], prepare, hit[1], path, raw_path, parsed.query or b""


class ExpressProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the express lane (see the module docstring).

    Made per app by :func:`express_protocol`, which sets :attr:`lane`.
    """

    lane: ClassVar[ExpressLane]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._guarded: Optional[asyncio.Task[Any]] = None
        self._gone = False
        #: The request whose headers and body the parser is reading, when the lane took it.
        self._reading: Optional[LeanRequest] = None
        #: The lane's request being answered (at most one: the lane takes none while another is answered).
        self._answering: Optional[LeanRequest] = None
        #: Its task (the one :meth:`guard` runs in).
        self._serving: Optional[asyncio.Task[Any]] = None
        #: When the connection last became idle (its last response sent, nothing read since); else ``None``.
        self._idle_since: Optional[float] = None

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        # uvicorn's per-request state; its scope is built only for a request the ASGI app answers.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._reading = None

    def on_headers_complete(self) -> None:
        request = self._take()
        if request is None:
            self._begin_scope(self.url, self.headers)
            super().on_headers_complete()
            return
        self._reading = self.cycle = request

    def on_body(self, body: bytes) -> None:
        request = self._reading
        if request is None:
            super().on_body(body)
            return
        request.body += body
        if len(request.body) > self.lane.gateway.settings.max_body_bytes:
            # the route answers 413 as it always does; the rest of the body goes to its cycle
            self._reading = None
            self._start_asgi_task(self.to_asgi(request, more_body=True), self.app)

    def on_message_complete(self) -> None:
        request = self._reading
        if request is None:
            super().on_message_complete()
            return
        self._reading = None
        self._answering = request
        task = self._serving = self.loop.create_task(self.lane.serve(self, request))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    # --- the lane's side ---------------------------------------------------------------------

    def _take(self) -> Optional[LeanRequest]:
        """A :class:`LeanRequest` for the request whose headers just completed, if the lane answers it."""
        parser = self.parser
        if (parser.get_method() != b"POST" or self.expect_100_continue or self.root_path
                or self.limit_concurrency is not None or (self.cycle is not None and not self.cycle.response_complete)
                or parser.should_upgrade()):
            return None
        hit = self.lane.route(self.url)
        if hit is None:
            return None
        version = parser.get_http_version()
        return LeanRequest(hit, self.headers, version, version != "1.0" and parser.should_keep_alive(),
                           time.perf_counter())

    def _begin_scope(self, url: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """uvicorn's ``on_message_begin``, for the request of ``url`` and ``headers`` (which it keeps)."""
        expect = self.expect_100_continue
        super().on_message_begin()
        self.url, self.expect_100_continue = url, expect
        self.headers.extend(headers)  # the scope's own list

    def to_asgi(self, request: LeanRequest, *, more_body: bool = False) -> RequestResponseCycle:
        """``request`` as the uvicorn request cycle ``on_headers_complete`` would have made of it."""
        path, raw_path, query = request.hit[3:]
        # the parser may be reading the next request meanwhile: leave its state as it was
        saved = self.url, self.headers, self.expect_100_continue, self.scope
        self._begin_scope(b"", request.headers)
        scope = self.scope
        self.url, self.headers, self.expect_100_continue, self.scope = saved
        scope["method"] = "POST"
        if request.http_version != "1.1":
            scope["http_version"] = request.http_version
        scope["path"], scope["raw_path"], scope["query_string"] = path, raw_path, query
        body, gone = request.body, request.disconnected
        RequestResponseCycle.__init__(
            request, scope=scope, transport=self.transport, flow=self.flow, logger=self.logger,
            access_logger=self.access_logger, access_log=self.access_log,
            default_headers=self.server_state.default_headers, message_event=asyncio.Event(),
            expect_100_continue=False, keep_alive=request.keep_alive, on_response=self._answered)
        request.body, request.more_body, request.disconnected = body, more_body, gone
        request.message_event.set()
        return request

    async def write(self, request: LeanRequest, response: Response) -> None:
        """Send ``response`` for ``request`` and finish it as uvicorn's ``send`` finishes a complete body."""
        if self.flow.write_paused and not request.disconnected:
            await self.flow.drain()
        if request.disconnected:
            return
        out = [STATUS_LINE[response.status_code]]
        for name, value in self.server_state.default_headers:
            out += (name, b": ", value, b"\r\n")
        for name, value in response.raw_headers:
            out += (name, b": ", value, b"\r\n")
        if not request.keep_alive:
            out.append(b"connection: close\r\n")
        out += (b"\r\n", response.body)
        self.transport.write(b"".join(out))
        request.response_started = request.response_complete = True
        if not request.keep_alive:
            self.transport.close()
        self._answered()

    def _answered(self) -> None:
        self._answering = None
        self.on_response_complete()

    async def guard(self, work: Any) -> Any:
        """The express :data:`~.routes.Guard`: ``work``, cancelled if the connection is lost meanwhile."""
        task = self._serving  # the lane's task: ``guard`` runs only there (not asyncio.current_task(),
        assert task is not None  # which costs a getpid() system call per request on Python 3.11)
        self._guarded = task
        try:
            return await unless_gone(task, work, lambda: self._gone)
        finally:
            self._guarded = None

    # --- keep-alive timeout: one timer per idle spell, not one per response -------------------------

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn cancels its timer whenever data arrives; here the connection is only marked busy,
        # and a timer still armed finds it so when it fires (see ``on_response_complete``).
        self._idle_since = None

    def on_response_complete(self) -> None:
        """uvicorn's, except the keep-alive timer: armed once, then re-armed only as far as needed.

        uvicorn arms a timer after every response and cancels it on the next
        request: two timer operations per request.  Here a response marks the
        connection idle, and an armed timer that finds it busy does nothing
        (the next response arms it again) or, if it went idle again since, waits
        for the rest of the timeout.  Same rule: an idle connection closes
        ``timeout_keep_alive`` seconds after its last response.
        """
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        since = self._idle_since
        if since is None:  # busy: the response that ends it arms the timer again
            return
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        super().connection_lost(exc)  # marks ``self.cycle`` (a lean request too) disconnected
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        answering = self._answering
        if answering is not None and answering is not self.cycle:  # a pipelined request is queued behind it
            answering.disconnected = True
            answering.message_event.set()
        reading, self._reading = self._reading, None
        if reading is not None:  # left before sending the whole body: counted, as the route counts it
            template, path = reading.hit[0], reading.hit[3]
            self.lane.metrics.record("POST", path, template, CLIENT_GONE, time.perf_counter() - reading.start)
        if self._guarded is not None and not self._gone:
            self._gone = True
            self._guarded.cancel()


def express_protocol(app: FastAPI) -> type[ExpressProtocol]:
    """The uvicorn ``http`` protocol class for ``app`` (which must have inference installed)."""
    return type("ExpressProtocol", (ExpressProtocol,), {"lane": ExpressLane(app)})
