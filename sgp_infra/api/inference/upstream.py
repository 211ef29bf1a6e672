"""The upstream client: one pooled aiohttp session to the model backends, and its error mapping.

Everything a backend can do wrong ends here as an :class:`UpstreamError` with
the status the API answers (502 broken backend, 503 unavailable, 504 too
slow, or the backend's own 4xx for a request it rejected), never as an
exception that escapes to the client.

Limits (defaults in :class:`~.settings.InferenceSettings`):

* connections are pooled and kept alive for 4 s idle, below uvicorn's 5 s
  (the usual model-server front end), so the API, not the server, closes idle
  connections; aiohttp never reuses one idle for longer;
* response headers: each line at most 8,190 bytes, at most 100 of them
  (aiohttp's ``max_line_size``, ``max_field_size`` and ``max_headers``);
* bodies are decoded here (:mod:`.decoding`, aiohttp's own decompression is
  off) piece by piece, so the 64 MiB answer cap holds on decoded bytes;
* connect timeout; read timeout to the headers, between two body chunks, and
  for the whole answer of a call that is not streamed;
* no redirects followed, no cookies kept.

Retries are the gateway's (:meth:`~.gateway.Gateway.forward`): only
connection refused (nothing was sent) and a 503 answer.  aiohttp itself never
resends a POST.  When a server closes a pooled connection just as a request
goes out on it, that request fails with a 502: a proxy must not resend a POST
that may have reached the model (RFC 9112, 9.3.1.1).
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, AsyncIterator, Callable, Mapping, Optional

import aiohttp
import orjson

from .decoding import BodyDecoder, UnsupportedEncoding
from .metrics import InferenceMetrics
from .settings import InferenceSettings, Timeouts

#: Backend 4xx answers passed on with their status: the caller's request was bad.
PASS_THROUGH_4XX = frozenset({400, 409, 413, 422, 429})
#: Bytes of an error answer quoted in the API's error detail.
SNIPPET = 2048
#: Sent with every forwarded request.  ``identity``: the proxy decodes nothing it did not need to.
POST_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                "accept-encoding": "identity"}
PROBE_HEADERS = {"accept": "*/*", "accept-encoding": "identity"}

#: ``asyncio.timeout`` (Python 3.11+), else ``None``: :meth:`Answer.read` then falls back to ``wait_for``.
_timeout = getattr(asyncio, "timeout", None)


class UpstreamError(Exception):
    """A failure to answer from the backend, as the API reports it."""

    def __init__(self, status: int, kind: str, detail: str, retry_after: Optional[int] = None,
                 pod_down: bool = False):
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after
        #: The backend looks down (refused, reset before answering, no connection in time):
        #: routing skips the pod for a while (``docs/inference.md``, "Health").
        self.pod_down = pod_down


def retry_after_seconds(value: Optional[str], low: int = 1, high: int = 300,
                        now: Optional[float] = None) -> Optional[int]:
    """A backend's ``Retry-After`` as whole seconds within ``[low, high]``; ``None`` if malformed.

    Either delta-seconds or an HTTP-date (RFC 9110, 10.2.3).  An absurd value
    is clamped, never passed on as it came: a date in the past becomes
    ``low``, a year becomes ``high``.
    """
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = int(text) if len(text) <= 9 else high
    else:
        try:
            when = parsedate_to_datetime(text)
            seconds = math.ceil(when.timestamp() - (time.time() if now is None else now))
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, low), high)


@lru_cache(maxsize=256)
def client_timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for one attempt: ``connect`` for a pooled connection (waiting for a free one
    included), ``read`` for the headers and each body chunk."""
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=read)


class Answer:
    """A backend response whose headers arrived; the body is read on demand, decoded and bounded.

    :meth:`close` is idempotent: the connection goes back to the pool if the
    body was read to its end, else it is closed.
    """

    def __init__(self, label: str, response: aiohttp.ClientResponse, timeouts: Timeouts, sent_at: float):
        self.label = label
        self.response = response
        self.timeouts = timeouts
        self.sent_at = sent_at
        self.status: int = response.status
        #: Case-insensitive; ``get`` gives the first value.
        self.headers: Mapping[str, str] = response.headers
        self.decoder: Optional[BodyDecoder] = None
        self.encoding_error: Optional[str] = None
        try:
            self.decoder = BodyDecoder(response.headers.get("content-encoding"))
        except UnsupportedEncoding as exc:
            self.encoding_error = str(exc)
        self._complete = False
        self._closed = False
        #: Called once when the answer is closed (the gateway ends the call's pod lease there).
        self.on_close: Optional[Callable[[], None]] = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """Decoded body bytes as they arrive, each piece at most 64 KiB."""
        if self.decoder is None:
            raise UpstreamError(502, "protocol", f"model '{self.label}' answered with a {self.encoding_error}")
        content = self.response.content
        while True:
            try:
                data = await content.readany()
            except aiohttp.ServerTimeoutError:
                raise UpstreamError(504, "read_timeout", f"model '{self.label}' sent nothing for "
                                    f"{self.timeouts.read:g} s while answering") from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise UpstreamError(502, "protocol", f"model '{self.label}' broke the connection while "
                                    f"answering ({describe(exc)})") from None
            if not data:
                self._complete = True
                return
            try:
                for piece in self.decoder.feed(data):
                    yield piece
            except zlib.error:
                raise UpstreamError(502, "protocol", f"model '{self.label}' answered a corrupt "
                                    f"{self.decoder.encoding} body") from None

    async def read(self, cap: int) -> bytes:
        """The whole decoded body (at most ``cap`` bytes, else a 502), within the read timeout of sending."""
        if self.response.content.is_eof():
            # The whole body arrived with the headers (the usual small answer): reading it never waits,
            # so no deadline is armed (a timer and a cancel scope per call).
            try:
                return await self._read(cap)
            finally:
                self.close()
        remaining = max(self.timeouts.read - (time.monotonic() - self.sent_at), 0.001)
        try:
            if _timeout is not None:  # Python 3.11+: a deadline on this task, no task of its own
                async with _timeout(remaining):
                    return await self._read(cap)
            return await asyncio.wait_for(self._read(cap), remaining)
        except asyncio.TimeoutError:
            raise UpstreamError(504, "read_timeout", f"model '{self.label}' did not finish its answer within "
                                f"{self.timeouts.read:g} s") from None
        finally:
            self.close()

    async def _read(self, cap: int) -> bytes:
        length = self.headers.get("content-length")
        identity = self.decoder is not None and self.decoder.encoding == "identity"
        if identity and length and length.isdigit():
            if int(length) > cap:
                raise UpstreamError(502, "too_large", f"model '{self.label}' answered {length} bytes; "
                                    f"the limit is {cap}")
            # A plain body of announced, allowed length: aiohttp reads exactly that many bytes.
            try:
                data = await self.response.read()
            except aiohttp.ServerTimeoutError:
                raise UpstreamError(504, "read_timeout", f"model '{self.label}' sent nothing for "
                                    f"{self.timeouts.read:g} s while answering") from None
            except aiohttp.ClientError as exc:
                raise UpstreamError(502, "protocol", f"model '{self.label}' broke the connection while "
                                    f"answering ({describe(exc)})") from None
            self._complete = True
            return data
        buf = bytearray()
        async for piece in self.chunks():
            buf += piece
            if len(buf) > cap:
                # Freed now: the error's traceback keeps this frame, and with it the buffer, until a
                # garbage collection finds the cycle.
                del buf
                raise UpstreamError(502, "too_large", f"model '{self.label}' answered more than {cap} bytes")
        return bytes(buf)

    async def snippet(self) -> str:
        """The start of an error answer, for the API's error detail (its ``detail``/``error``/``message``
        if it is a JSON object)."""
        buf = b""
        try:
            async for piece in self.chunks():
                buf += piece
                if len(buf) >= SNIPPET:
                    break
        except UpstreamError:
            pass
        finally:
            self.close()
        text = buf[:SNIPPET].decode("utf-8", errors="replace").strip()
        try:
            body = orjson.loads(buf)
        except orjson.JSONDecodeError:
            return text[:500]
        if isinstance(body, dict):
            for key in ("detail", "error", "message"):
                value = body.get(key)
                if isinstance(value, str):
                    return value[:500]
                if isinstance(value, dict):
                    return orjson.dumps(value).decode()[:500]
        return text[:500]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._complete:
            self.response.release()
        else:
            self.response.close()
        if self.on_close is not None:
            callback, self.on_close = self.on_close, None
            callback()

    async def aclose(self) -> None:
        self.close()


def describe(exc: BaseException) -> str:
    """A short reason for a client failure (aiohttp's messages can be empty)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Upstream:
    """The shared connection pool: one attempt to one URL (:meth:`attempt`), health probes, error mapping."""

    def __init__(self, settings: InferenceSettings, metrics: InferenceMetrics):
        self.settings = settings
        self.metrics = metrics
        self._session: Optional[aiohttp.ClientSession] = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the server's event loop.
        if self._session is None or self._session.closed:
            s = self.settings
            connector = aiohttp.TCPConnector(limit=s.pool_limit, keepalive_timeout=s.keepalive_seconds)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None), max_line_size=s.max_response_header_line,
                max_field_size=s.max_response_header_line, max_headers=s.max_response_headers)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, url: str, timeout: float = 2.0) -> bool:
        """``True`` if ``url`` answers 2xx (a healthcheck through the Service)."""
        try:
            async with self.session.get(url, headers=PROBE_HEADERS, allow_redirects=False,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                await response.content.read(SNIPPET)
                return 200 <= response.status < 300
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return False

    async def attempt(self, label: str, url: str, payload: bytes, timeouts: Timeouts) -> Answer:
        """POST ``payload`` to ``url`` once; the :class:`Answer` once its headers arrived, whatever its status.

        A refused connection raises an :class:`UpstreamError` of kind
        ``connect`` (nothing was sent: the caller may try again); every other
        failure is final.
        """
        sent_at = time.monotonic()
        try:
            response = await self.session.post(url, data=payload, headers=POST_HEADERS, allow_redirects=False,
                                               timeout=client_timeout(timeouts.connect, timeouts.read))
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError) \
                as exc:
            raise UpstreamError(502, "protocol", f"model '{label}': TLS failure ({describe(exc)})") from None
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamError(504, "connect_timeout", f"model '{label}' did not accept a connection within "
                                f"{timeouts.connect:g} s", self.settings.retry_after, pod_down=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(503, "connect", f"model '{label}' is not accepting connections at {url} "
                                f"({describe(exc)})", self.settings.retry_after, pod_down=True) from None
        except aiohttp.ServerTimeoutError:
            raise UpstreamError(504, "read_timeout", f"model '{label}' did not answer within "
                                f"{timeouts.read:g} s") from None
        except aiohttp.ClientResponseError as exc:  # a response aiohttp would not parse (over the header limits...)
            raise UpstreamError(502, "protocol", f"model '{label}' answered malformed or oversized headers "
                                f"({exc.message})") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise UpstreamError(502, "protocol", f"model '{label}' broke the connection before answering "
                                f"({describe(exc)})",
                                pod_down=isinstance(exc, aiohttp.ClientConnectionError)) from None
        self.metrics.upstream_latency_of(label).observe(time.monotonic() - sent_at)
        return Answer(label, response, timeouts, sent_at)

    async def status_error(self, answer: Answer, url: str) -> UpstreamError:
        """The API's error for a backend answer that is not 2xx (its body is read, up to a snippet)."""
        status, label = answer.status, answer.label
        said = await answer.snippet()
        said = f": {said}" if said else ""
        s = self.settings
        retry_after = retry_after_seconds(answer.headers.get("retry-after"), s.retry_after_min, s.retry_after_max)
        if status == 503:
            return UpstreamError(503, "unavailable", f"model '{label}' is unavailable (it answered 503{said})",
                                 retry_after or s.retry_after)
        if status in PASS_THROUGH_4XX:
            return UpstreamError(status, "upstream_4xx", f"model '{label}' rejected the request{said}",
                                 (retry_after or s.retry_after) if status == 429 else None)
        if 300 <= status < 500:
            return UpstreamError(502, "upstream_4xx", f"model '{label}' answered {status} at {url}; check its "
                                 f"predict_route and endpoint_protocol{said}")
        return UpstreamError(502, "upstream_5xx", f"model '{label}' failed with HTTP {status}{said}")


def parse_json(label: str, data: bytes) -> Any:
    """A backend's JSON answer (502 ``bad_response`` if it is not JSON)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError(502, "bad_response", f"model '{label}' answered a body that is not JSON") from None
