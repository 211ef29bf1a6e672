"""A lean HTTP/1.1 client for the proxy's upstream leg: a keep-alive connection
pool on asyncio Protocols, with ``httptools`` (llhttp, the parser uvicorn
already uses) parsing the responses.

Why not aiohttp here: on the benchmark machine aiohttp's client was about 30%
of the API's CPU per proxied request.  For each request it builds a
``ClientRequest``, a payload object, a timer context, header multidicts and a
``ClientResponse``, and runs its pure-Python connector bookkeeping.  The
proxy needs a small part of that: POST a byte body to a known origin, read
the status, a few headers and the body, with per-request connect and read
timeouts.  This module does exactly that and nothing else.  The numbers are
in ``docs/inference.md`` (Benchmark).

What it does, and what :mod:`.proxy` relies on:

* **Pooling:** one pool of keep-alive connections per origin
  ``(scheme, host, port)``.  A connection goes back to the pool only after
  its response was read to the end and the server allowed keep-alive.  An
  idle connection the server closes leaves the pool at once (its
  ``connection_lost``).  Connections idle for ``keepalive`` seconds are closed.
  At most ``limit`` connections are open at a time; beyond that a request
  waits for one to be freed.
* **Timeouts:** ``connect`` covers DNS, TCP and TLS.  ``read`` covers the
  wait for the response headers and then each wait for more body bytes, so a
  stream may last as long as it keeps sending.
* **Errors:** every failure is one of :class:`ConnectError` (nothing reached
  the server: refused, unreachable, name not found, TLS handshake), a
  :class:`ConnectTimeout`, a :class:`ReadTimeout` or a :class:`ProtocolError`
  (reset, closed early, malformed HTTP).  :mod:`.proxy` maps them to the
  API's 502/503/504.
* **Streaming:** :meth:`Connection.read` returns whatever body bytes have
  arrived, as soon as any have.  The connection stops reading from the socket
  while more than ``HIGH_WATER`` bytes wait for the reader, so a slow client
  is never buffered without bound.
* **Closing:** :meth:`Connection.abort` drops the connection (a cancelled
  request, a client that went away, a body left unread).  Only
  :meth:`Connection.release` after a complete response reuses it.
* **Content coding:** the client asks for ``accept-encoding: identity``.  A
  server that compresses anyway with gzip or deflate is decoded, as aiohttp
  did.  Any other coding is a :class:`ProtocolError`.
* **TLS:** ``https://`` URLs use the default SSL context (certificates are
  verified).  A certificate error is :class:`ConnectError` with
  ``tls=True``.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
import zlib
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from .turns import at_end_of_turn

#: Body bytes buffered for the reader before the socket is paused.
HIGH_WATER = 256 * 1024
#: Parsed URLs kept (one per model route: the set is small and fixed).
URL_CACHE = 4096


class ClientError(Exception):
    """Base of this client's failures."""


class ConnectError(ClientError):
    """No connection: refused, unreachable, DNS or TLS handshake failure (``tls`` for a certificate error)."""

    def __init__(self, reason: str, *, tls: bool = False):
        super().__init__(reason)
        self.tls = tls


class ConnectTimeout(ClientError):
    """The connection was not established within the connect timeout."""


class ReadTimeout(ClientError):
    """No response headers, or no more body bytes, within the read timeout."""


class ProtocolError(ClientError):
    """The server broke the exchange: reset, closed early, malformed HTTP."""


def reason(exc: BaseException) -> str:
    """``Type: first line of the message``, short enough for an error detail."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Target:
    """A parsed URL: the pool key, the request target and the ``host`` header."""

    __slots__ = ("key", "host", "port", "tls", "path", "host_header")

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme in {url!r}: use http:// or https://")
        host = parts.hostname
        if not host:
            raise ValueError(f"no host in URL {url!r}")
        self.tls = parts.scheme == "https"
        default = 443 if self.tls else 80
        self.port = parts.port or default
        self.host = host
        self.key = (parts.scheme, host, self.port)
        shown = f"[{host}]" if ":" in host else host
        self.host_header = (shown if self.port == default else f"{shown}:{self.port}").encode("idna")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.path = path.encode("ascii")


class Headers(dict):  # type: ignore[type-arg]
    """Response headers: ``get("Content-Type")`` → the first value, as ``str``.

    Stored as raw bytes by lower-case name and decoded (latin-1) on ``get``:
    a response carries several headers and the proxy reads one or two.
    """

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        value = dict.get(self, key.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")


class Connection(asyncio.Protocol):
    """One keep-alive connection and the response currently being read on it.

    One request at a time.  The parser's callbacks fill ``status``,
    ``headers`` and the body buffer; the reader waits on one future, which
    they resolve.
    """

    def __init__(self, pool: "Pool", key: tuple[str, str, int]):
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport: Optional[asyncio.Transport] = None
        self.parser = HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        #: A request :meth:`send_then` will write at the end of the loop's turn.
        self._out: Optional[bytes] = None
        #: Inside ``parser.feed_data`` (a :class:`_Notify` due then waits for it to return).
        self._feeding = False
        self._notify_due: Optional[_Notify] = None
        #: The read timeout's timer and when it is due (see :meth:`_wait`).
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._reset()

    def _reset(self) -> None:
        self.busy = False
        self.status = 0
        self.headers: Headers = Headers()
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.until_eof = False
        self.error: Optional[ClientError] = None
        self._body: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._waiter: Optional["asyncio.Future[None] | _Notify"] = None
        self._decoder: Any = None

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # nothing was asked: a server talking out of turn is not reusable
            self.abort()
            return
        if self.error is not None:
            return
        self._feeding = True
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols"))
        except HttpParserError as exc:
            self._fail(ProtocolError(f"malformed HTTP response ({reason(exc)})"))
        finally:
            self._feeding = False
        notify = self._notify_due
        if notify is not None:  # called back here, once the parser is done with this data
            self._notify_due = None
            notify.fire(None)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost does the rest

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        self._stop_timer()
        self.pool._forget(self)
        if not self.busy or self.complete or self.error is not None:
            return
        if self.until_eof and exc is None:  # a body delimited by the end of the connection
            self.on_message_complete()
            return
        if exc is not None:
            self._fail(ProtocolError(reason(exc)), abort=False)
        elif not self.headers_done:
            self._fail(ProtocolError("the server closed the connection without answering"), abort=False)
        else:
            self._fail(ProtocolError("the server closed the connection before the response was complete"),
                       abort=False)

    def pause_writing(self) -> None:  # request bodies are small and already in memory
        pass

    def resume_writing(self) -> None:
        pass

    # --- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        key = name.lower()
        if key not in headers:
            headers[key] = value

    def on_headers_complete(self) -> None:
        if self.headers_done:  # a second response to one request
            self._fail(ProtocolError("the server sent a second response to one request"))
            return
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue and friends: the real answer follows
            self.headers = Headers()
            return
        self.status = status
        headers = self.headers
        self.until_eof = (b"content-length" not in headers and b"transfer-encoding" not in headers
                          and status not in (204, 304))
        raw_coding = dict.get(headers, b"content-encoding")
        if raw_coding and raw_coding != b"identity":
            coding = raw_coding.decode("latin-1").strip().lower()
            if coding in ("gzip", "x-gzip", "deflate"):
                self._decoder = zlib.decompressobj(wbits=47)  # zlib or gzip header, detected
            elif coding != "identity":
                self._fail(ProtocolError(f"the server used content-encoding {coding!r}, which was not asked for"))
                return
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.error is not None:
            return
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error as exc:
                self._fail(ProtocolError(f"undecodable compressed body ({exc})"))
                return
            if not body:
                return
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:  # the end of a 1xx interim answer
            return
        if self._decoder is not None:
            try:
                rest = self._decoder.flush()
            except zlib.error as exc:
                self._fail(ProtocolError(f"undecodable compressed body ({exc})"))
                return
            if rest:
                self._body.append(rest)
                self._buffered += len(rest)
        # Asked now: llhttp resets its flags once the message is done.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake()

    # --- the reader's side ----------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: ClientError, abort: bool = True) -> None:
        if self.error is None:
            self.error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if abort:
            self.abort()

    def send_then(self, data: bytes, timeout: float, callback: Callable[[Optional[BaseException]], None]) -> None:
        """Send ``data`` (a request) and call ``callback(error)`` once, without a task waiting.

        Called with ``None`` when the response is complete, when the exchange
        failed (``error`` says how), or when more than ``HIGH_WATER`` bytes of
        its body are waiting (the connection stops reading ahead: read the rest
        with :meth:`read`); with a :class:`ReadTimeout` when nothing more came
        within ``timeout``.  Then the connection is the caller's as it would be
        after that wait in :meth:`response` or :meth:`read`: with ``None``
        they return or raise at once.  The callback runs from the event loop,
        never from inside the parser (so it may release the connection).
        """
        self._reset()
        self.busy = True
        self._out = data  # written when this turn of the loop ends (see .turns), with the turn's other writes
        at_end_of_turn(self.loop, self._send_out)
        self._waiter = _Notify(self, callback)
        self._arm(self.loop.time() + timeout)

    def _send_out(self) -> None:
        data, self._out = self._out, None
        if data is not None and not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def _arm(self, deadline: float) -> None:
        """The current wait ends at ``deadline`` (see :meth:`_wait` for the one timer)."""
        self._deadline = deadline
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._timer_due)
            self._timer_at = deadline

    async def _wait(self, timeout: float) -> None:
        """Until a parser callback or the connection's end wakes us; :class:`ReadTimeout` after ``timeout``.

        One timer per connection, not one per wait: arming and cancelling a
        timer for every response costs about 1.8 µs under uvloop.  A wait
        sets its deadline; the armed timer is moved only when the new
        deadline is earlier than it.  When it fires it ends a wait past its
        deadline, re-arms for a wait whose deadline is later, and stops when
        nothing waits (an idle connection).
        """
        loop = self.loop
        waiter = self._waiter = loop.create_future()
        self._arm(loop.time() + timeout)
        try:
            await waiter
        finally:
            self._waiter = None

    def _timer_due(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._deadline > self.loop.time():
            self._timer = self.loop.call_at(self._deadline, self._timer_due)
            self._timer_at = self._deadline
        else:
            waiter.set_exception(ReadTimeout())

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def send(self, data: bytes) -> None:
        self._reset()
        self.busy = True
        self.transport.write(data)  # type: ignore[union-attr]

    async def response(self, timeout: float) -> None:
        """Wait for the status line and headers (``status``, ``headers``)."""
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout)
        # An error that arrived with the headers (a reset right after them) shows on the next read.

    async def read(self, timeout: float) -> bytes:
        """The body bytes that arrived since the last call, waiting for some; ``b""`` at the end."""
        while True:
            data = self.take()
            if data is not None:
                return data
            await self._wait(timeout)

    def take(self) -> Optional[bytes]:
        """What :meth:`read` returns now, or ``None`` where it would wait for more."""
        if self._body:
            body = self._body
            data = body[0] if len(body) == 1 else b"".join(body)
            self._body = []
            self._buffered = 0
            if self._paused and not self.closed:
                self._paused = False
                self.transport.resume_reading()  # type: ignore[union-attr]
            return data
        if self.error is not None:
            raise self.error
        if self.complete:
            return b""
        return None

    def release(self) -> None:
        """Back to the pool if the response was read to its end and keep-alive holds; else close."""
        if not self.busy:
            return
        reusable = (self.complete and not self._body and self.error is None and not self.until_eof
                    and not self.closed and self.keep_alive)
        self.busy = False
        if reusable:
            self._body = []
            self.pool._idle_again(self)
        else:
            self.abort()

    def abort(self) -> None:
        """Drop the connection now (never back to the pool)."""
        self.busy = False
        self._stop_timer()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            self.pool._forget(self)


class _Notify:
    """A connection's waiter that calls back instead of waking a task (:meth:`Connection.send_then`).

    It answers the calls the connection makes on a waiter future (``done``,
    ``set_result``, ``set_exception``).  ``set_result`` comes from every
    parser event (headers, each part of the body, the end): only the end, a
    failure or a full buffer call back.
    """

    __slots__ = ("conn", "callback", "_done")

    def __init__(self, conn: Connection, callback: Callable[[Optional[BaseException]], None]):
        self.conn = conn
        self.callback = callback
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, _: None) -> None:
        conn = self.conn
        if conn.error is None and not conn.complete and not conn._paused:
            return  # the headers, or a part of the body: wait for the rest
        if conn._feeding:
            conn._notify_due = self  # Connection.data_received calls back once the parser returns
        else:
            self.fire(None)

    def set_exception(self, exc: BaseException) -> None:
        self.fire(exc)

    def fire(self, error: Optional[BaseException]) -> None:
        if self._done:
            return
        self._done = True
        conn = self.conn
        if conn._waiter is self:
            conn._waiter = None
        if conn._notify_due is self:
            conn._notify_due = None
        self.callback(error)


class Pool:
    """Keep-alive connections per origin, at most ``limit`` open in all."""

    def __init__(self, *, limit: int = 1024, keepalive: float = 30.0,
                 ssl_context: Optional[ssl.SSLContext] = None):
        self.loop = asyncio.get_running_loop()
        self.limit = limit
        self.keepalive = keepalive
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], collections.deque[Connection]] = {}
        self._open: set[Connection] = set()
        self._connecting = 0
        self._room: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweeper: Optional[asyncio.TimerHandle] = None
        self._targets: dict[str, Target] = {}
        self.closed = False

    def target(self, url: str) -> Target:
        """The parsed ``url``, memoised (ValueError for a URL this client cannot call)."""
        found = self._targets.get(url)
        if found is None:
            if len(self._targets) >= URL_CACHE:
                self._targets.clear()
            found = self._targets[url] = Target(url)
        return found

    def open_connections(self) -> int:
        """Connections open now, idle and in use (and being opened)."""
        return len(self._open) + self._connecting

    async def acquire(self, target: Target, connect_timeout: float) -> Connection:
        """An idle connection to ``target``'s origin, or a new one."""
        conn = self._take_idle(target.key)
        if conn is not None:
            return conn
        while len(self._open) + self._connecting >= self.limit:
            if not self._close_one_idle():
                waiter = self.loop.create_future()
                self._room.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in self._room:
                        self._room.remove(waiter)
                conn = self._take_idle(target.key)
                if conn is not None:
                    return conn
        return await self._connect(target, connect_timeout)

    def take_idle(self, target: Target) -> Optional[Connection]:
        """An idle connection to ``target``'s origin now, or ``None`` (then :meth:`acquire`)."""
        return None if self.closed else self._take_idle(target.key)

    def _take_idle(self, key: tuple[str, str, int]) -> Optional[Connection]:
        """The most recently used idle connection to ``key`` that is open and not past ``keepalive``.

        Checked here, not only by the sweep (which runs every ``keepalive``
        seconds): a connection older than that is closed rather than reused,
        so the pool stops using it before a server with a slightly longer
        idle timeout closes it under a request in flight.
        """
        idle = self._idle.get(key)
        cutoff = time.monotonic() - self.keepalive
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if conn.idle_since <= cutoff:
                conn.abort()
                continue
            return conn
        return None

    async def _connect(self, target: Target, timeout: float) -> Connection:
        context: Any = None
        if target.tls:
            context = self._ssl = self._ssl or ssl.create_default_context()
        factory: Callable[[], Connection] = lambda: Connection(self, target.key)  # noqa: E731
        self._connecting += 1
        try:
            _transport, conn = await asyncio.wait_for(
                self.loop.create_connection(factory, target.host, target.port, ssl=context,
                                            server_hostname=target.host if context else None), timeout)
        except asyncio.TimeoutError:
            raise ConnectTimeout(f"no connection to {target.host}:{target.port} within {timeout:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            raise ConnectError(f"TLS certificate rejected ({reason(exc)})", tls=True) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake
            raise ConnectError(reason(exc)) from None
        finally:
            self._connecting -= 1
            self._make_room()
        if self.closed or conn.closed:
            conn.abort()
            raise ConnectError("the connection closed as it opened")
        self._open.add(conn)
        return conn

    def _idle_again(self, conn: Connection) -> None:
        if self.closed:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        queue = self._idle.get(conn.key)
        if queue is None:
            queue = self._idle[conn.key] = collections.deque()
        queue.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.keepalive, self._sweep)
        self._make_room()

    def _forget(self, conn: Connection) -> None:
        """``conn`` is closed: out of the open set and its idle queue."""
        if conn in self._open:
            self._open.discard(conn)
            queue = self._idle.get(conn.key)
            if queue is not None and conn in queue:
                queue.remove(conn)
            self._make_room()

    def _make_room(self) -> None:
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_one_idle(self) -> bool:
        oldest: Optional[Connection] = None
        for queue in self._idle.values():
            if queue and (oldest is None or queue[0].idle_since < oldest.idle_since):
                oldest = queue[0]
        if oldest is None:
            return False
        oldest.abort()
        return True

    def _sweep(self) -> None:
        """Close connections idle for ``keepalive`` seconds; run again while any stay idle."""
        self._sweeper = None
        cutoff = time.monotonic() - self.keepalive
        left = False
        for queue in self._idle.values():
            while queue and queue[0].idle_since <= cutoff:
                queue[0].abort()  # abort() removes it from the queue
            left = left or bool(queue)
        if left and not self.closed:
            self._sweeper = self.loop.call_later(self.keepalive, self._sweep)

    async def aclose(self) -> None:
        """Close every connection; requests in progress fail with :class:`ProtocolError`."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._open):
            if conn.busy:
                conn._fail(ProtocolError("the client is closing"))
            else:
                conn.abort()
        self._idle.clear()
        for waiter in self._room:
            if not waiter.done():
                waiter.set_exception(ProtocolError("the client is closing"))
