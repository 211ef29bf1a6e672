"""Limits at the connection, around uvicorn's HTTP protocol.

Head size, header count, time to send the head, the connection cap.

uvicorn bounds idle keep-alive time (``timeout_keep_alive``) and reads a body
only as the app asks for it, but it has no public setting for the rest: its
httptools protocol keeps every header field it is sent (trailers included),
never times out a client that sends its head slowly or not at all, and
accepts any number of connections.  :class:`GuardedHttp` adds those limits
*by composition*: it is the protocol uvicorn's documented ``http=`` setting
takes, it creates uvicorn's own protocol (``httptools`` or ``h11``, the class
``http="httptools"`` names) and hands it every connection event, after
running the same bytes through an ``httptools.HttpRequestParser`` of its own
to see where each request head and each header field begins and ends:

* **connection cap** — a connection arriving while the worker already has
  ``max_connections`` open gets a 503 in the API's JSON error shape and is
  closed; uvicorn never sees it;
* **time to send the head** — from connecting, and from the first byte of
  every later request, a client has ``header_timeout_seconds`` to finish the
  request head; then it gets a 408 (or, if it never sent a byte, is just
  closed);
* **head size and header count** — a request line plus header fields over
  ``max_header_bytes``, or more than ``max_headers`` fields, is a 431.  Bytes
  are counted as they are fed, in slices, so neither parser ever buffers more
  than the limit plus one slice of an unfinished field;
* **no request trailers** — uvicorn adds the trailer fields of a chunked body
  to the request's headers, and when they arrive with the head that happens
  before any ASGI code runs, so a trailer could pass for a header the client
  sent up front (an ``x-api-key``).  A request with trailers is a 400, and
  uvicorn never sees them.

A request the guard's parser cannot parse is a 400 in the error shape.  Every
error the guard writes has ``Connection: close``; the connection then closes
after the client stops sending or after a short linger (so the client reads
the answer instead of a reset), and rejected connections lingering at once
are capped too.  Connection counts are per worker process.
"""

from __future__ import annotations

import asyncio
import functools
from http import HTTPStatus
from typing import Any, Optional

import httptools
import orjson
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from ..catalog.settings import ApiLimits
from .errors import error_code

#: Bytes fed to the guard's parser at once while it is outside a head (inside a body).
SLICE = 64 * 1024
#: How long a rejected connection may linger, reading and dropping what the client still sends.
LINGER_SECONDS = 2.0

_lingering = 0


def error_bytes(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 error response in the API's JSON shape, closing the connection."""
    body = orjson.dumps({"status": status, "error": error_code(status), "detail": detail})
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n")
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


def guarded_http(limits: ApiLimits, inner: str = "httptools") -> Any:
    """What to give uvicorn's ``http`` setting: a factory of :class:`GuardedHttp` with ``limits``
    around uvicorn's ``inner`` protocol (``httptools`` or ``h11``).

    A ``functools.partial`` of the class, not a class made on the fly: with
    ``--workers`` uvicorn pickles its config into each worker process, and a
    partial of a module-level class pickles by reference.
    """
    return functools.partial(GuardedHttp, limits=limits, inner=inner)


class GuardedHttp(asyncio.Protocol):
    """uvicorn's HTTP protocol with the connection limits of ``limits``; see the module doc.

    Give uvicorn ``http=guarded_http(limits)``: uvicorn constructs the protocol with
    its own keyword arguments, which go on, unread, to the inner protocol.
    """

    #: The connections the guard let through that are still open, in this process (one server
    #: per process: ``serve`` and each of its workers).
    open_connections: set[GuardedHttp] = set()

    def __init__(self, *, limits: ApiLimits, inner: str = "httptools", **options: Any) -> None:
        inner_class = import_from_string(HTTP_PROTOCOLS.get(inner, inner))
        self.inner: asyncio.Protocol = inner_class(**options)
        self.connections = self.open_connections
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.transport: Optional[asyncio.Transport] = None
        self.parser: Optional[httptools.HttpRequestParser] = httptools.HttpRequestParser(self)
        try:
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn sets its own
        except AttributeError:  # pragma: no cover - httptools < 0.6.3
            pass
        #: While true, bytes fed count against the head budget: inside a head, or after a chunk header
        #: (the last chunk's trailers), until body bytes show it was an ordinary chunk.
        self.counting = True
        self.in_head = True  # between a request's first byte and the end of its head
        self.used = 0  # raw bytes fed while counting, this message
        self.size = 0  # request line plus complete header fields, this message
        self.fields = 0
        self.received = False
        self.violation: Optional[tuple[int, str]] = None
        self.timer: Optional[asyncio.TimerHandle] = None
        self.rejected = False  # answered by the guard: uvicorn's protocol gets no more bytes
        self.inner_connected = False  # uvicorn's protocol has the connection (and must hear it is lost)
        self.lingering = False

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio classes, hence the ignore.
        self.transport = transport  # type: ignore[assignment]
        if len(self.connections) >= self.limits.max_connections:
            self._reject(503, f"this API worker has its maximum of {self.limits.max_connections} "
                              "connections open; retry shortly")
            return
        self._arm()
        self.connections.add(self)
        self.inner_connected = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.rejected:
            return  # lingering: what the client still sends is dropped
        self.received = True
        if self.parser is not None:
            self._check(data)
            if self.violation is not None:
                self._reject(*self.violation)
                return
        self.inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        if self.rejected:
            return None  # the client is done sending: the transport closes
        return self.inner.eof_received()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        global _lingering
        self._disarm()
        if self.lingering:
            self.lingering = False
            _lingering -= 1
        self.connections.discard(self)
        if self.inner_connected:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner_connected:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner_connected:
            self.inner.resume_writing()

    # --- httptools callbacks (the guard's own parser) --------------------------------------------------

    def on_message_begin(self) -> None:
        self.counting = self.in_head = True
        self.used = self.size = self.fields = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self.size += len(url)
        self._check_size()

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head and self.violation is None:
            # uvicorn would add a trailer field to the request's headers, where it could pass for one
            # the client sent up front (an x-api-key, say): a request with trailers is refused.
            self.violation = (400, "request trailers are not accepted by this API; send every field in the "
                                   "request head")
        self.fields += 1
        self.size += len(name) + len(value) + 4
        if self.fields > self.limits.max_headers and self.violation is None:
            self.violation = (431, f"the request has more than {self.limits.max_headers} header fields")
        self._check_size()

    def on_headers_complete(self) -> None:
        self.counting = self.in_head = False
        self._disarm()

    def on_chunk_header(self) -> None:
        self.counting = True  # the last chunk's trailers may follow

    def on_body(self, body: bytes) -> None:
        self.counting = False

    def on_message_complete(self) -> None:
        self.counting = True  # what comes next is the next request's head

    # --- the checks -------------------------------------------------------------------------------------

    def _check_size(self) -> None:
        if self.size > self.limits.max_header_bytes and self.violation is None:
            self.violation = (431, f"the request line and header fields are over the "
                                   f"{self.limits.max_header_bytes:,}-byte limit of this API")

    def _check(self, data: bytes) -> None:
        """Feed ``data`` to the guard's parser in slices, counting head bytes; sets ``violation``."""
        assert self.parser is not None
        budget = self.limits.max_header_bytes
        pos, end = 0, len(data)
        while pos < end and self.violation is None:
            counting = self.counting
            step = max(1, budget - self.used + 1) if counting else SLICE
            piece = data[pos:pos + step]
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                self.parser = None  # uvicorn answers upgrades itself; this connection is no longer HTTP/1.1
                self._disarm()
                return
            except httptools.HttpParserError:
                self.violation = (400, "the request is not valid HTTP/1.1")
                return
            # Counted when the whole piece may be head or trailers; a head that starts inside a piece of
            # body is counted from the next piece on (so at most one slice of it escapes the count).
            if counting and self.counting:
                self.used += len(piece)
                if self.used > budget and self.violation is None:
                    self.violation = (431, f"the request line and header fields are over the {budget:,}-byte "
                                           "limit of this API")
            pos += len(piece)

    # --- timers and answers ---------------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self.timer = self.loop.call_later(self.limits.header_timeout_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _too_slow(self) -> None:
        self.timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if not self.received:  # never sent a byte: nothing to answer
            self.rejected = True
            self.transport.close()
            return
        self._reject(408, f"the request head was not complete within {self.limits.header_timeout_seconds:g} s")

    def _reject(self, status: int, detail: str) -> None:
        """Answer ``status`` in the error shape and close, lingering briefly (see the module doc)."""
        global _lingering
        transport = self.transport
        self._disarm()
        self.rejected = True
        self.parser = None
        if transport is None or transport.is_closing():
            return
        if _lingering >= self.limits.max_connections:  # too many already lingering: drop this one at once
            transport.abort()
            return
        _lingering += 1
        self.lingering = True
        transport.write(error_bytes(status, detail))
        if not self.inner_connected and transport.can_write_eof():
            transport.write_eof()  # nothing else will write here: tell the client at once
        self.loop.call_later(LINGER_SECONDS, transport.close)
