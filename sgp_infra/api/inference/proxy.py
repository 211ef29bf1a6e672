"""Forwarding to model backends: one pooled HTTP client (aiohttp), retries, error mapping.

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
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

import aiohttp
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .metrics import InferenceMetrics
from .settings import InferenceSettings, Timeouts

log = logging.getLogger("sgp_infra.api.inference")

#: Backend 4xx answers passed on with their status: the caller's request was bad.
PASS_THROUGH_4XX = frozenset({400, 409, 413, 422, 429})
SNIPPET = 2048


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

    def __init__(self, label: str, response: aiohttp.ClientResponse, timeouts: Timeouts):
        self.label = label
        self.response = response
        self.timeouts = timeouts
        self.status = response.status
        self.headers = response.headers
        self._complete = False

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.content.iter_any():
                yield chunk
            self._complete = True
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamError(504, "read_timeout", f"model '{self.label}' sent nothing for "
                                f"{self.timeouts.read:g} s while answering") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(502, "protocol", f"model '{self.label}' broke the connection while answering "
                                f"({_reason(exc)})") from None

    async def aclose(self) -> None:
        if self._complete:
            self.response.release()
        else:
            self.response.close()


class Forwarder:
    """The shared connection pool and the request/retry loop.

    aiohttp rather than httpx for the hot path: on the benchmark machine an
    httpx ``AsyncClient`` at concurrency 64 capped the proxy near 140 requests
    per second, while aiohttp's pool kept up with the backend (see
    ``docs/inference.md``).  aiohttp is already installed with the ``api``
    extra (kubernetes-asyncio depends on it).
    """

    def __init__(self, settings: InferenceSettings, metrics: InferenceMetrics):
        self.settings = settings
        self.metrics = metrics
        self._session: Optional[aiohttp.ClientSession] = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the server's event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=1024, limit_per_host=0, keepalive_timeout=30,
                                             ttl_dns_cache=30)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  timeout=aiohttp.ClientTimeout(total=None),
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def open_connections(self) -> int:
        """Connections the pool holds now, idle and in use."""
        if self._session is None:
            return 0
        connector = self._session.connector
        if connector is None:
            return 0
        idle = sum(len(v) for v in connector._conns.values())  # type: ignore[attr-defined]
        return idle + len(connector._acquired)  # type: ignore[attr-defined]

    async def probe(self, url: str, timeout: float = 2.0) -> bool:
        """``True`` if ``url`` answers 2xx (a healthcheck through the Service)."""
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                return 200 <= response.status < 300
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def open(self, label: str, url: str, content: bytes, timeouts: Timeouts, *,
                   retries: Optional[int] = None) -> Upstream:
        """POST ``content`` and return the response once its headers arrived (2xx only)."""
        retries = self.settings.retries if retries is None else retries
        timeout = aiohttp.ClientTimeout(total=None, connect=timeouts.connect, sock_connect=timeouts.connect,
                                        sock_read=timeouts.read)
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                response = await self.session.post(url, data=content, timeout=timeout, allow_redirects=False,
                                                   headers=_HEADERS)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc, aiohttp.ClientConnectorCertificateError):
                    raise UpstreamError(502, "protocol", f"model '{label}': TLS failure ({_reason(exc)})") from None
                if attempt < retries:
                    attempt += 1
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                raise UpstreamError(503, "connect", f"model '{label}' is not accepting connections at {url} "
                                    f"({_reason(exc)}) after {attempt + 1} attempts",
                                    self.settings.retry_after) from None
            except aiohttp.ConnectionTimeoutError:
                raise UpstreamError(504, "connect_timeout", f"model '{label}' did not accept a connection "
                                    f"within {timeouts.connect:g} s", self.settings.retry_after) from None
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
                raise UpstreamError(504, "read_timeout", f"model '{label}' did not answer within "
                                    f"{timeouts.read:g} s") from None
            except (aiohttp.ClientError, ValueError) as exc:
                raise UpstreamError(502, "protocol", f"model '{label}' broke the connection before answering "
                                    f"({_reason(exc)})") from None
            self.metrics.upstream_latency_of(label).observe(time.perf_counter() - started)
            upstream = Upstream(label, response, timeouts)
            if response.status == 503 and attempt < retries:
                await upstream.aclose()
                attempt += 1
                await asyncio.sleep(self._backoff(attempt))
                continue
            if response.status >= 300:
                raise await self._status_error(label, url, upstream)
            return upstream

    def _backoff(self, attempt: int) -> float:
        return self.settings.backoff * (2 ** (attempt - 1))

    async def _status_error(self, label: str, url: str, upstream: Upstream) -> UpstreamError:
        status = upstream.status
        try:
            snippet = await _snippet(upstream)
        finally:
            await upstream.aclose()
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

    async def read(self, upstream: Upstream) -> bytes:
        """The whole body, at most ``max_response_bytes``; closes the response."""
        cap = self.settings.max_response_bytes
        try:
            length = upstream.headers.get("content-length")
            if length and length.isdigit() and int(length) > cap:
                raise UpstreamError(502, "too_large", f"model '{upstream.label}' answered {length} bytes; "
                                    f"the limit is {cap}")
            buf = bytearray()
            async for chunk in upstream.chunks():
                buf += chunk
                if len(buf) > cap:
                    raise UpstreamError(502, "too_large", f"model '{upstream.label}' answered more than "
                                        f"{cap} bytes")
            return bytes(buf)
        finally:
            await upstream.aclose()


_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


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


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
