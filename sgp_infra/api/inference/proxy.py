"""Forwarding to model backends: one pooled HTTP client, retries, error mapping.

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

import httpx
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


class Forwarder:
    """The shared connection pool and the request/retry loop."""

    def __init__(self, settings: InferenceSettings, metrics: InferenceMetrics):
        self.settings = settings
        self.metrics = metrics
        self._client: Optional[httpx.AsyncClient] = None

    @property
    def client(self) -> httpx.AsyncClient:
        # Created on first use, inside the server's event loop.
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256, keepalive_expiry=30),
                timeout=httpx.Timeout(30.0), follow_redirects=False, trust_env=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def open_connections(self) -> int:
        """Connections the pool holds now (for the load test's leak check)."""
        if self._client is None:
            return 0
        pool = self._client._transport._pool  # type: ignore[attr-defined]
        return len(pool.connections)

    async def probe(self, url: str, timeout: float = 2.0) -> bool:
        """``True`` if ``url`` answers 2xx (a healthcheck through the Service)."""
        try:
            response = await self.client.get(url, timeout=timeout)
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 300

    async def open(self, label: str, url: str, content: bytes, timeouts: Timeouts, *,
                   retries: Optional[int] = None) -> httpx.Response:
        """POST ``content`` and return the response once its headers arrived (2xx only)."""
        retries = self.settings.retries if retries is None else retries
        timeout = httpx.Timeout(connect=timeouts.connect, read=timeouts.read, write=timeouts.read,
                                pool=timeouts.connect)
        attempt = 0
        while True:
            request = self.client.build_request("POST", url, content=content, timeout=timeout,
                                                headers={"content-type": "application/json",
                                                         "accept": "application/json, text/event-stream"})
            started = time.perf_counter()
            try:
                response = await self.client.send(request, stream=True)
            except httpx.ConnectError as exc:
                if attempt < retries:
                    attempt += 1
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                raise UpstreamError(503, "connect", f"model '{label}' is not accepting connections at {url} "
                                    f"({_reason(exc)}) after {attempt + 1} attempts",
                                    self.settings.retry_after) from None
            except httpx.ConnectTimeout:
                raise UpstreamError(504, "connect_timeout", f"model '{label}' did not accept a connection "
                                    f"within {timeouts.connect:g} s", self.settings.retry_after) from None
            except httpx.PoolTimeout:
                raise UpstreamError(503, "unavailable", f"no free connection to model '{label}' within "
                                    f"{timeouts.connect:g} s", self.settings.retry_after) from None
            except httpx.TimeoutException:
                raise UpstreamError(504, "read_timeout", f"model '{label}' did not answer within "
                                    f"{timeouts.read:g} s") from None
            except httpx.HTTPError as exc:
                raise UpstreamError(502, "protocol", f"model '{label}' broke the connection before answering "
                                    f"({_reason(exc)})") from None
            self.metrics.upstream_latency.labels(label).observe(time.perf_counter() - started)
            if response.status_code == 503 and attempt < retries:
                await response.aclose()
                attempt += 1
                await asyncio.sleep(self._backoff(attempt))
                continue
            if response.status_code >= 300:
                raise await self._status_error(label, url, response)
            return response

    def _backoff(self, attempt: int) -> float:
        return self.settings.backoff * (2 ** (attempt - 1))

    async def _status_error(self, label: str, url: str, response: httpx.Response) -> UpstreamError:
        status = response.status_code
        try:
            snippet = await _snippet(response)
        finally:
            await response.aclose()
        said = f": {snippet}" if snippet else ""
        if status == 503:
            return UpstreamError(503, "unavailable", f"model '{label}' is unavailable (it answered 503{said})",
                                 _retry_after(response) or self.settings.retry_after)
        if status in PASS_THROUGH_4XX:
            return UpstreamError(status, "upstream_4xx", f"model '{label}' rejected the request{said}",
                                 _retry_after(response) if status == 429 else None)
        if 400 <= status < 500:
            return UpstreamError(502, "upstream_4xx", f"model '{label}' answered {status} at {url}; check its "
                                 f"predict_route and endpoint_protocol{said}")
        return UpstreamError(502, "upstream_5xx", f"model '{label}' failed with HTTP {status}{said}")

    async def read(self, label: str, response: httpx.Response, timeouts: Timeouts) -> bytes:
        """The whole body, at most ``max_response_bytes``; closes the response."""
        cap = self.settings.max_response_bytes
        try:
            length = response.headers.get("content-length")
            if length and length.isdigit() and int(length) > cap:
                raise UpstreamError(502, "too_large", f"model '{label}' answered {length} bytes; "
                                    f"the limit is {cap}")
            buf = bytearray()
            async for chunk in response.aiter_bytes():
                buf += chunk
                if len(buf) > cap:
                    raise UpstreamError(502, "too_large", f"model '{label}' answered more than {cap} bytes")
            return bytes(buf)
        except httpx.TimeoutException:
            raise UpstreamError(504, "read_timeout", f"model '{label}' stopped sending its answer for "
                                f"{timeouts.read:g} s") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(502, "protocol", f"model '{label}' broke the connection while answering "
                                f"({_reason(exc)})") from None
        finally:
            await response.aclose()


def parse_json(label: str, data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError(502, "bad_response", f"model '{label}' answered a body that is not JSON") from None


async def _snippet(response: httpx.Response) -> str:
    buf = b""
    try:
        async for chunk in response.aiter_bytes():
            buf += chunk
            if len(buf) >= SNIPPET:
                break
    except httpx.HTTPError:
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


def _retry_after(response: httpx.Response) -> Optional[int]:
    value = response.headers.get("retry-after", "")
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
