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
it keeps the body, and when the body is complete :meth:`ExpressLane.begin`

1. authenticates, checks, admits and forwards with the very functions the
   FastAPI routes use (:func:`~..auth.authenticate`,
   :data:`~.routes.TYPED_ROUTES`, :func:`~.routes.forward_of`,
   :meth:`~.gateway.Gateway.admit`, :func:`~.routes.typed`);
2. for a model that is up, with an idle connection to it in the pool, sends
   the call at once and lets that connection's callback finish it (a
   :class:`Flight`: no task, no coroutine); anything else (a cold model to
   hold for, a connection to open, a backend answer other than a complete
   2xx) is forwarded in a task by :func:`~.routes.typed`;
3. writes the response's bytes itself, at the end of the loop's turn with the
   turn's other writes (:mod:`.turns`), and records the same request metrics
   and access line as :class:`~..metrics.MetricsMiddleware`.

A request that turns out to need the ASGI app (the call streams, or the body
goes over the limit, which the route answers with 413) is handed over *as
uvicorn would have built it*: the lean request becomes a uvicorn request cycle
with the same scope and the body read so far (:meth:`ExpressProtocol.to_asgi`),
and the app answers it as it answers every other request.

So the answers, errors (``ApiError`` shape, 429, 502-504, ``Retry-After``),
in-flight accounting and cold-start holds are those of the routes; only the
plumbing between the socket and them is shorter.  A client that disconnects
cancels the backend request at once: :meth:`ExpressProtocol.connection_lost`
cancels the guarded work or drops the flight's backend call, and a client
that leaves before its body is complete is counted as 499, as the route
counts it.

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
from typing import Any, ClassVar, Coroutine, Optional

import httptools
from fastapi import FastAPI
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from ..auth import Caller, authenticate
from ..errors import ApiError, error_response, unexpected_error
from .fast import match_fast_route
from .gateway import ClientGone, Slot, unless_gone
from .http1 import Connection
from .protocols import BadBackendBody
from .proxy import Sent, UpstreamError
from .routes import (CLIENT_GONE, TYPED_ROUTES, Forward, Prepare, Typed, decode_body, failure_response, forward_of,
                     typed, typed_answer, upstream_error_response)
from .turns import at_end_of_turn

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
    see it as they would see a cycle.  :meth:`ExpressProtocol.to_asgi` makes
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

    def begin(self, protocol: "ExpressProtocol", request: LeanRequest) -> None:
        """Answer ``request`` (its body is complete): at once, on a :class:`Flight`, or in a task.

        The checks run here, in the protocol's callback: a call they refuse is
        answered at once.  A call that streams goes to the ASGI app.  A call
        for a model that is up, with an idle connection to it in the pool, is
        sent now and finished by that connection's callback (a
        :class:`Flight`).  Anything else (a cold model to hold for, a
        connection to open) is forwarded in a task, by the routes' own
        :func:`~.routes.typed`.
        """
        gw = self.gateway
        try:
            prepare, params = request.hit[1], request.hit[2]
            t = prepare(self.index, self._caller(request.headers), params, decode_body(request.body))
            if t.call.stream:
                protocol.start_asgi(request)
                return
            forward = forward_of(gw, t)
            slot = gw.admit(t.model, t.call.op)
        except ApiError as exc:
            self.finish(protocol, request, error_response(exc))
            return
        except UpstreamError as exc:
            self.finish(protocol, request, upstream_error_response(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered 500 in the API's shape
            self.finish(protocol, request, unexpected_error(request.hit[3], exc))
            return
        if gw.ready_now(t.model):
            flight = Flight(self, protocol, request, t, forward, slot)
            sent = gw.forwarder.send_now(gw.base_url(t.model) + forward.route, forward.payload, forward.timeouts,
                                         flight.landed)
            if sent is not None:
                flight.conn, flight.started = sent
                protocol.flight = flight
                return
        protocol.serve_async(self.serve(protocol, request, t, forward, slot))

    def _caller(self, headers: list[tuple[bytes, bytes]]) -> Caller:
        key = selected = None
        for name, value in headers:  # the first of repeated headers counts, as in Starlette's ``Headers``
            if name == b"x-api-key":
                if key is None:
                    key = value.decode("latin-1")
            elif name == b"x-selected-account-id":
                if selected is None:
                    selected = value.decode("latin-1")
        return authenticate(self.keyring, key, selected)

    async def serve(self, protocol: "ExpressProtocol", request: LeanRequest, t: Typed, forward: Forward, slot: Slot,
                    sent: Optional[Sent] = None) -> None:
        """Forward a checked, admitted call in a task (taking up the attempt a :class:`Flight` ``sent``)."""
        try:
            response = await typed(self.gateway, protocol.guard, t, forward=forward, slot=slot, sent=sent)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered 500 in the API's shape
            response = unexpected_error(request.hit[3], exc)
        await self.finish_async(protocol, request, response)

    def finish(self, protocol: "ExpressProtocol", request: LeanRequest, response: Response) -> None:
        """Send ``response`` now (in a task if the client is not reading: flow control) and record it."""
        status = response.status_code
        if status != CLIENT_GONE:
            if protocol.flow.write_paused and not request.disconnected:
                protocol.serve_async(self.finish_async(protocol, request, response))
                return
            protocol.write_now(request, response)
        self.record(request, status)

    async def finish_async(self, protocol: "ExpressProtocol", request: LeanRequest, response: Response) -> None:
        """:meth:`finish`, waiting in the task for the client to read again if it had stopped."""
        status = response.status_code
        if status != CLIENT_GONE:
            await protocol.write(request, response)
        self.record(request, status)

    def record(self, request: LeanRequest, status: int) -> None:
        """The request's metrics and access line, as :class:`~..metrics.MetricsMiddleware` records them."""
        self.metrics.record("POST", request.hit[3], request.hit[0], status, time.perf_counter() - request.start)


class Flight:
    """A checked, admitted call sent on an idle pooled connection, finished by its callback: no task.

    Why: most calls wait for nothing but the backend's answer, and the
    connection can call back when that has all arrived
    (:meth:`~.http1.Connection.send_then`), so a task per call and the chain
    of coroutines it ran through (guard, admission, gateway, forwarder, the
    connection's waiter future) are not needed for them.  Together with the
    writes made at the end of the loop's turn (:mod:`.turns`) this cut the
    API's CPU per proxied request by about 15% (``docs/inference.md``,
    Benchmark); alone it measured within noise, because answering from
    callbacks spaced the writes out.

    What is done here is only the common case: a complete 2xx answer is turned
    into the caller's answer with the same functions the routes use
    (:meth:`~.gateway.Gateway.answered_json`, :func:`~.routes.typed_answer`,
    :func:`~.routes.failure_response`).  Any other end (an error, a timeout, a
    non-2xx status that may be retried or mapped, a body too large to buffer)
    is handed to :meth:`ExpressLane.serve`, whose :func:`~.routes.typed` takes
    the attempt up as if it had waited for it (:class:`~.proxy.Sent`).
    A client that leaves meanwhile drops the backend call and is counted as
    499, as in the routes.
    """

    __slots__ = ("lane", "protocol", "request", "t", "forward", "slot", "conn", "started", "over")

    def __init__(self, lane: ExpressLane, protocol: "ExpressProtocol", request: LeanRequest, t: Typed,
                 forward: Forward, slot: Slot):
        self.lane = lane
        self.protocol = protocol
        self.request = request
        self.t = t
        self.forward = forward
        self.slot = slot
        #: The connection it was sent on, and when (set once sent: :meth:`ExpressLane.begin`).
        self.conn: Optional[Connection] = None
        self.started = 0.0
        #: Finished (answered, handed over or abandoned by the client).
        self.over = False

    def landed(self, error: Optional[BaseException]) -> None:
        """The connection's callback: the answer has all arrived, or the wait ended otherwise."""
        if self.over:
            return
        self.over = True
        protocol, request, conn, t, lane = self.protocol, self.request, self.conn, self.t, self.lane
        assert conn is not None
        protocol.flight = None
        if error is not None or conn.error is not None or not conn.complete or not 200 <= conn.status < 300:
            protocol.serve_async(lane.serve(protocol, request, t, self.forward, self.slot,
                                            Sent(conn, self.started, error)))
            return
        gw = lane.gateway
        try:
            upstream = gw.forwarder.accept(t.model.name, conn, self.forward.timeouts, self.started)
            response = typed_answer(t, self.forward.kind, gw.answered_json(t.model, upstream))
            self.slot.finish(response.status_code)
        except (UpstreamError, BadBackendBody) as exc:
            response = failure_response(self.slot, exc)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered 500 in the API's shape
            self.slot.finish(500, type(exc).__name__)
            response = unexpected_error(request.hit[3], exc)
        lane.finish(protocol, request, response)

    def client_gone(self) -> None:
        """The client disconnected meanwhile: the backend call is dropped and counted, as in the routes."""
        if self.over:
            return
        self.over = True
        if self.conn is not None:
            self.conn.abort()
        failure_response(self.slot, ClientGone())
        self.lane.record(self.request, CLIENT_GONE)


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
        #: Its task (the one :meth:`guard` runs in), when it is answered in one.
        self._serving: Optional[asyncio.Task[Any]] = None
        #: Its flight, when it is answered on one.
        self.flight: Optional[Flight] = None
        #: Its response, waiting for the end of the loop's turn to be written.
        self._out: Optional[tuple[LeanRequest, bytes]] = None
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
        self.lane.begin(self, request)

    def serve_async(self, work: Coroutine[Any, Any, None]) -> None:
        """Run the lane's ``work`` for the request being answered in a task (the one :meth:`guard` guards)."""
        task = self._serving = self.loop.create_task(work)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def start_asgi(self, request: LeanRequest) -> None:
        """Hand ``request`` (its body complete) to the ASGI app."""
        self._start_asgi_task(self.to_asgi(request), self.app)

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
        """:meth:`write_now`, once the client reads again if it had stopped (flow control)."""
        if self.flow.write_paused and not request.disconnected:
            await self.flow.drain()
        self.write_now(request, response)

    def write_now(self, request: LeanRequest, response: Response) -> None:
        """Send ``response`` for ``request`` when this turn of the loop ends (:mod:`.turns`), and finish it
        there as uvicorn's ``send`` finishes a complete body."""
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
        # at most one waits: the lane takes no request while one is being answered
        self._out = (request, b"".join(out))
        at_end_of_turn(self.loop, self._send_out)

    def _send_out(self) -> None:
        out, self._out = self._out, None
        if out is None:
            return
        request, data = out
        if request.disconnected:  # the client left before the turn ended
            return
        self.transport.write(data)
        request.response_started = request.response_complete = True
        if not request.keep_alive:  # asked for, or the server is shutting down (uvicorn's ``shutdown``)
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
        flight, self.flight = self.flight, None
        if flight is not None:
            flight.client_gone()


def express_protocol(app: FastAPI) -> type[ExpressProtocol]:
    """The uvicorn ``http`` protocol class for ``app`` (which must have inference installed)."""
    return type("ExpressProtocol", (ExpressProtocol,), {"lane": ExpressLane(app)})
