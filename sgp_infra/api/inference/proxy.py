"""Forwarding to model backends: one pooled HTTP/1.1 client (:mod:`.http1`), retries, error mapping.

Everything a backend can do wrong ends here as an :class:`UpstreamError` with
the status the API answers (502 broken backend, 503 unavailable, 504 too
slow, or the backend's own 4xx for a request it rejected), never as an
exception that escapes to the client:

* connection refused → retried with exponential backoff (nothing reached the
  backend, so it is safe), then 503 with ``Retry-After``;
* a 503 answer before any byte of body → retried the same way, then 503;
* connect timeout, read timeout (headers or a stream gap) → 504;
* resets, malformed HTTP, non-JSON or wrongly shaped bodies, bodies over the
  size limit → 502.

Nothing else is retried: once the request may have reached a model, sending it
again could run it twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable, NamedTuple, Optional

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .http1 import ClientError, Connection, ConnectError, ConnectTimeout, Headers, Pool, ReadTimeout, Target
from .http1 import reason as _reason
from .metrics import InferenceMetrics
from .settings import InferenceSettings, Timeouts

log = logging.getLogger("sgp_infra.api.inference")

#: Backend 4xx answers passed on with their status: the caller's request was bad.
PASS_THROUGH_4XX = frozenset({400, 409, 413, 422, 429})
SNIPPET = 2048
#: Seconds an idle backend connection is kept for reuse: below the 5 s idle
#: timeout of uvicorn (the usual model-server front end), so the API, not the
#: server, closes idle connections.  When a server closes one just as a request
#: goes out on it, that request fails with a 502, because a proxy must not
#: resend a POST that may have reached the model (RFC 9112, 9.3.1.1).
KEEPALIVE = 4.0


class Sent(NamedTuple):
    """A first attempt the express lane already sent (:meth:`Forwarder.send_now`) and how its wait ended.

    :meth:`Forwarder.open` takes it up from there: a :class:`ReadTimeout`
    ``error`` is reported as if it had been waited for there; otherwise the
    connection's own state (the response, or its ``error``) is read as after
    any other wait.
    """

    conn: Connection
    started: float
    error: Optional[BaseException] = None


class UpstreamError(Exception):
    """A failure to answer from the backend, as the API reports it."""

    def __init__(self, status: int, kind: str, detail: str, retry_after: Optional[int] = None):
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after


class Upstream:
    """A backend response whose headers arrived; the body is read on demand.

    :meth:`chunks` yields body bytes as they arrive and turns every transport
    failure into an :class:`UpstreamError`; :meth:`aclose` is idempotent and
    drops the connection unless the body was read to the end (then it goes
    back to the pool).
    """

    __slots__ = ("label", "conn", "timeouts", "status", "headers", "_complete", "_closed")

    def __init__(self, label: str, conn: Connection, timeouts: Timeouts):
        self.label = label
        self.conn = conn
        self.timeouts = timeouts
        self.status: int = conn.status
        self.headers: Headers = conn.headers
        self._complete = False
        self._closed = False

    async def next_chunk(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); ``b""`` at the end."""
        try:
            data = await self.conn.read(self.timeouts.read)
        except ReadTimeout:
            raise UpstreamError(504, "read_timeout", f"model '{self.label}' sent nothing for "
                                f"{self.timeouts.read:g} s while answering") from None
        except ClientError as exc:
            raise UpstreamError(502, "protocol", f"model '{self.label}' broke the connection while answering "
                                f"({exc})") from None
        if not data:
            self._complete = True
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            data = await self.next_chunk()
            if not data:
                return
            yield data

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """:meth:`aclose` without the coroutine (it never waits)."""
        if self._closed:
            return
        self._closed = True
        if self._complete:
            self.conn.release()
        else:
            self.conn.abort()


class Forwarder:
    """The shared connection pool and the request/retry loop.

    The upstream client is :mod:`.http1`, a small HTTP/1.1 keep-alive client
    on asyncio Protocols and ``httptools``.  History: httpx's ``AsyncClient``
    capped the proxy near 140 requests per second at concurrency 64 on the
    benchmark machine; aiohttp kept up, but its client was still about 30% of
    the API's CPU per request.  The lean client does the same job for a
    fraction of that (figures in ``docs/inference.md``, Benchmark).
    """

    def __init__(self, settings: InferenceSettings, metrics: InferenceMetrics):
        self.settings = settings
        self.metrics = metrics
        self._pool: Optional[Pool] = None

    @property
    def pool(self) -> Pool:
        # Created on first use, inside the server's event loop.
        if self._pool is None or self._pool.closed:
            self._pool = Pool(limit=1024, keepalive=KEEPALIVE)
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    def open_connections(self) -> int:
        """Connections the pool holds now, idle and in use."""
        return 0 if self._pool is None else self._pool.open_connections()

    async def probe(self, url: str, timeout: float = 2.0) -> bool:
        """``True`` if ``url`` answers 2xx (a healthcheck through the Service)."""
        try:
            return await asyncio.wait_for(self._get_ok(url, timeout), timeout)
        except (ClientError, ValueError, asyncio.TimeoutError):
            return False

    async def _get_ok(self, url: str, timeout: float) -> bool:
        pool = self.pool
        target = pool.target(url)
        conn = await pool.acquire(target, timeout)
        try:
            conn.send(b"GET %s HTTP/1.1\r\nhost: %s\r\n%s\r\n" % (target.path, target.host_header, _GET_HEADERS))
            await conn.response(timeout)
            size = 0
            while size <= SNIPPET:  # drain a small body so the connection can be reused
                data = await conn.read(timeout)
                if not data:
                    break
                size += len(data)
            return 200 <= conn.status < 300
        finally:
            conn.release()  # back to the pool if the body was read to its end, else dropped

    def send_now(self, url: str, content: bytes, timeouts: Timeouts,
                 callback: Callable[[Optional[BaseException]], None]) -> Optional[tuple[Connection, float]]:
        """POST ``content`` on an idle pooled connection now; ``None`` if there is none (then :meth:`open`).

        ``callback`` is called once the response is complete or the wait ends
        otherwise (:meth:`~.http1.Connection.send_then`); the connection and
        the time it was sent make the :class:`Sent` that :meth:`open` and
        :meth:`accept` take up.
        """
        pool = self.pool
        try:
            target = pool.target(url)
        except ValueError:
            return None  # open() reports the bad URL
        conn = pool.take_idle(target)
        if conn is None:
            return None
        started = time.perf_counter()
        conn.send_then(_post(target, content), timeouts.read, callback)
        return conn, started

    def accept(self, label: str, conn: Connection, timeouts: Timeouts, started: float) -> Upstream:
        """The response whose headers arrived on ``conn``, its wait counted in the upstream latency."""
        self.metrics.upstream_latency.observe((label,), time.perf_counter() - started)
        return Upstream(label, conn, timeouts)

    async def open(self, label: str, url: str, content: bytes, timeouts: Timeouts, *,
                   retries: Optional[int] = None, sent: Optional[Sent] = None) -> Upstream:
        """POST ``content`` and return the response once its headers arrived (2xx only).

        With ``sent``, the first attempt is that one (already sent).
        """
        retries = self.settings.retries if retries is None else retries
        attempt = 0
        while True:
            if sent is not None:
                conn, started = sent.conn, sent.started
            else:
                started = time.perf_counter()
                try:
                    pool = self.pool
                    target = pool.target(url)
                    conn = await pool.acquire(target, timeouts.connect)
                except ConnectError as exc:
                    if exc.tls:
                        raise UpstreamError(502, "protocol", f"model '{label}': TLS failure ({exc})") from None
                    if attempt < retries:
                        attempt += 1
                        await asyncio.sleep(self._backoff(attempt))
                        continue
                    raise UpstreamError(503, "connect", f"model '{label}' is not accepting connections at {url} "
                                        f"({exc}) after {attempt + 1} attempts",
                                        self.settings.retry_after) from None
                except ConnectTimeout:
                    raise UpstreamError(504, "connect_timeout", f"model '{label}' did not accept a connection "
                                        f"within {timeouts.connect:g} s", self.settings.retry_after) from None
                except (ClientError, ValueError) as exc:
                    raise UpstreamError(502, "protocol", f"model '{label}' broke the connection before answering "
                                        f"({_reason(exc) if isinstance(exc, ValueError) else exc})") from None
            try:
                if sent is None:
                    conn.send(_post(target, content))
                elif sent.error is not None:
                    raise sent.error
                sent = None
                await conn.response(timeouts.read)
            except ReadTimeout:
                conn.abort()
                raise UpstreamError(504, "read_timeout", f"model '{label}' did not answer within "
                                    f"{timeouts.read:g} s") from None
            except ClientError as exc:
                conn.abort()
                raise UpstreamError(502, "protocol", f"model '{label}' broke the connection before answering "
                                    f"({exc})") from None
            except BaseException:  # cancelled (the client left, shutdown): the connection is in an unknown state
                conn.abort()
                raise
            upstream = self.accept(label, conn, timeouts, started)
            status = upstream.status
            if status == 503 and attempt < retries:
                upstream.close()
                attempt += 1
                await asyncio.sleep(self._backoff(attempt))
                continue
            if status >= 300:
                raise await self._status_error(label, url, upstream)
            return upstream

    def _backoff(self, attempt: int) -> float:
        return self.settings.backoff * (2 ** (attempt - 1))

    async def _status_error(self, label: str, url: str, upstream: Upstream) -> UpstreamError:
        status = upstream.status
        try:
            snippet = await _snippet(upstream)
        finally:
            upstream.close()
        said = f": {snippet}" if snippet else ""
        retry_after = _retry_after(upstream)
        if status == 503:
            return UpstreamError(503, "unavailable", f"model '{label}' is unavailable (it answered 503{said})",
                                 retry_after or self.settings.retry_after)
        if status in PASS_THROUGH_4XX:
            return UpstreamError(status, "upstream_4xx", f"model '{label}' rejected the request{said}",
                                 retry_after if status == 429 else None)
        if 400 <= status < 500:
            return UpstreamError(502, "upstream_4xx", f"model '{label}' answered {status} at {url}; check its "
                                 f"predict_route and endpoint_protocol{said}")
        return UpstreamError(502, "upstream_5xx", f"model '{label}' failed with HTTP {status}{said}")

    def read_now(self, upstream: Upstream) -> bytes:
        """:meth:`read` for a response that has all arrived (``upstream.conn.complete``): no waiting."""
        cap = self.settings.max_response_bytes
        try:
            data = upstream.conn.take() or b""
            upstream._complete = True
            if len(data) > cap:  # the same error as read(): by the announced length first
                self._check_length(upstream, cap)
                raise _too_large(upstream.label, cap)
            return data
        finally:
            upstream.close()

    @staticmethod
    def _check_length(upstream: Upstream, cap: int) -> None:
        length = upstream.headers.get("content-length")
        if length and length.isdigit() and int(length) > cap:
            raise UpstreamError(502, "too_large", f"model '{upstream.label}' answered {length} bytes; "
                                f"the limit is {cap}")

    async def read(self, upstream: Upstream) -> bytes:
        """The whole body, at most ``max_response_bytes``; closes the response."""
        cap = self.settings.max_response_bytes
        try:
            self._check_length(upstream, cap)
            data = await upstream.next_chunk()
            if not data:
                return b""
            rest = await upstream.next_chunk()
            if not rest:  # the usual case: the whole body had arrived with the headers
                if len(data) > cap:
                    raise _too_large(upstream.label, cap)
                return data
            buf = bytearray(data)
            while rest:
                buf += rest
                if len(buf) > cap:
                    raise _too_large(upstream.label, cap)
                rest = await upstream.next_chunk()
            return bytes(buf)
        finally:
            upstream.close()


def _post(target: Target, content: bytes) -> bytes:
    """The forwarded request: a POST of the JSON ``content`` to ``target``."""
    return (b"POST %s HTTP/1.1\r\nhost: %s\r\n%scontent-length: %d\r\n\r\n%s"
            % (target.path, target.host_header, _POST_HEADERS, len(content), content))


def _too_large(label: str, cap: int) -> UpstreamError:
    return UpstreamError(502, "too_large", f"model '{label}' answered more than {cap} bytes")


#: Sent with every forwarded request.  ``identity``: the proxy decodes nothing it did not need to.
_POST_HEADERS = b"content-type: application/json\r\naccept: application/json, text/event-stream\r\n" \
    b"accept-encoding: identity\r\n"
_GET_HEADERS = b"accept: */*\r\naccept-encoding: identity\r\n"


def parse_json(label: str, data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError(502, "bad_response", f"model '{label}' answered a body that is not JSON") from None


async def _snippet(upstream: Upstream) -> str:
    buf = b""
    try:
        async for chunk in upstream.chunks():
            buf += chunk
            if len(buf) >= SNIPPET:
                break
    except UpstreamError:
        pass
    text = buf[:SNIPPET].decode("utf-8", errors="replace").strip()
    try:
        body = orjson.loads(buf)
        if isinstance(body, dict):
            for key in ("detail", "error", "message"):
                if isinstance(body.get(key), (str, dict)):
                    text = body[key] if isinstance(body[key], str) else orjson.dumps(body[key]).decode()
                    break
    except orjson.JSONDecodeError:
        pass
    return text[:500]


def _retry_after(upstream: Upstream) -> Optional[int]:
    value = upstream.headers.get("retry-after", "")
    return int(value) if value.isdigit() else None


class ProxyStream(Response):
    """A streaming response that forwards chunks as they come and stops the
    upstream request as soon as the client goes away.

    The chunk pump and a disconnect listener race; whichever ends first
    cancels the other, and ``on_close`` (closing the backend response,
    releasing the in-flight slot) always runs exactly once.
    """

    def __init__(self, chunks: AsyncIterator[bytes], on_close: Callable[[bool], Awaitable[None]], *,
                 media_type: str = "text/event-stream"):
        super().__init__(content=None, status_code=200, media_type=media_type,
                         headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        # A stream has no length: drop the ``content-length: 0`` Response adds for an empty body.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.chunks = chunks
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        disconnected = False

        async def pump() -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def listen() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return

        pump_task = asyncio.ensure_future(pump())
        listen_task = asyncio.ensure_future(listen())
        try:
            done, _ = await asyncio.wait({pump_task, listen_task}, return_when=asyncio.FIRST_COMPLETED)
            if listen_task in done and not pump_task.done():
                disconnected = True
            for task in (pump_task, listen_task):
                task.cancel()
            for task in (pump_task, listen_task):
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except OSError:
                    disconnected = True
                except Exception:  # noqa: BLE001 - the stream is already started; log and end it
                    log.exception("inference stream failed")
        finally:
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # noqa: BLE001 - closing a broken stream must not fail the response
                    pass
            await self.on_close(disconnected)
