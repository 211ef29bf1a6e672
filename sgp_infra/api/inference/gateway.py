"""One inference request's life: admission, cold-start hold, forwarding, accounting.

The :class:`Gateway` is created once per app (``install``) and owns the
forwarder (connection pool), the waker (one poll task per waking model) and
the per-model in-flight counters behind both the 429 cap and the
``sgp_infra_model_requests_in_flight`` gauge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional, TypeVar

import orjson
from starlette.requests import Request

from ...catalog import Model
from ..common import model_base_url
from ..status import StatusSource
from .metrics import InferenceMetrics
from .protocols import BadBackendBody
from .proxy import Forwarder, Sent, Upstream, UpstreamError
from .settings import InferenceSettings, Timeouts
from .streams import Event, EventSplitter, EventTooLarge, sse_error
from .wake import Waker, status_ready

log = logging.getLogger("sgp_infra.api.inference")
T = TypeVar("T")


#: Model states that fail a request at once (503), without a hold.
_FAILED = ("failed", "deployment_timeout")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


class Slot:
    """One admitted request: counted in flight until :meth:`finish` runs (once)."""

    def __init__(self, gateway: "Gateway", model: Model, operation: str):
        self.gateway = gateway
        self.model = model
        self.operation = operation
        self.done = False

    def finish(self, code: int, error_kind: Optional[str] = None) -> None:
        if self.done:
            return
        self.done = True
        g, label = self.gateway, self.model.object_name
        g.in_flight[label] -= 1  # also the in-flight gauge (metrics.InFlightGauge reads it)
        g.metrics.requests.inc((label, self.operation, code))
        if error_kind:
            g.metrics.errors.inc((label, error_kind))


class Gateway:
    def __init__(self, settings: InferenceSettings, metrics: InferenceMetrics, status: StatusSource,
                 backends: Mapping[str, str], namespace: str):
        self.settings = settings
        self.metrics = metrics
        self.status = status
        self.backends = dict(backends)
        self.namespace = namespace
        self.forwarder = Forwarder(settings, metrics)
        self.waker = Waker(settings.wake_poll_interval, settings.ready_fresh_for)
        #: Per model object name; the same dict the in-flight gauge is read from.
        self.in_flight: dict[str, int] = metrics.in_flight_counts
        self._base_urls: dict[str, str] = {}
        self._timeouts: dict[str, tuple[Model, Timeouts]] = {}

    async def aclose(self) -> None:
        await self.waker.close()
        await self.forwarder.aclose()

    # --- addressing ---------------------------------------------------------

    def base_url(self, model: Model) -> str:
        """``serve --backend`` override, else the model's in-cluster Service (memoised per model)."""
        url = self._base_urls.get(model.name)
        if url is None:
            url = self._base_urls[model.name] = model_base_url(model, self.backends, self.namespace)
        return url

    def timeouts(self, model: Model, read: Optional[float] = None) -> Timeouts:
        # Memoised per model object: models are frozen (an update through the API is a new object).
        entry = self._timeouts.get(model.name)
        if entry is None or entry[0] is not model:
            entry = self._timeouts[model.name] = (model, self.settings.timeouts(model))
        t = entry[1]
        return t if read is None else Timeouts(t.connect, read, t.cold_start)

    # --- admission ------------------------------------------------------------

    def admit(self, model: Model, operation: str) -> Slot:
        """Count the request in flight, or a 429 beyond ``per_worker × max_workers``."""
        label = model.object_name
        cap = self.settings.in_flight_cap(model)
        current = self.in_flight.get(label, 0)
        if current >= cap:
            self.metrics.requests.inc((label, operation, 429))
            self.metrics.errors.inc((label, "over_capacity"))
            raise UpstreamError(429, "over_capacity", f"model '{model.name}' already has {current} requests in "
                                f"flight, its limit (per_worker {model.per_worker} x max_workers "
                                f"{model.max_workers}); retry shortly", 1)
        self.in_flight[label] = current + 1
        return Slot(self, model, operation)

    # --- readiness ----------------------------------------------------------------

    def ready_now(self, model: Model) -> bool:
        """``True`` if :meth:`ensure_ready` would return at once (the model is up: no hold, no error)."""
        key = model.object_name
        st = self.status.get(key)
        return st.status not in _FAILED and (status_ready(st) or self.waker.recently_ok(key))

    async def ensure_ready(self, model: Model, *, trust_status: bool = True) -> None:
        """Return when the model can take the request; hold while it wakes up."""
        if trust_status and self.ready_now(model):
            return
        key = model.object_name
        st = self.status.get(key)
        if st.status in _FAILED:
            raise UpstreamError(503, "model_failed", f"model '{model.name}' is {st.status}"
                                + (f": {st.reason}" if st.reason else ""), 60)
        timeout = self.timeouts(model).cold_start
        health = self.base_url(model) + model.healthcheck_route
        started = time.perf_counter()

        def ready_now() -> bool:
            return trust_status and status_ready(self.status.get(key))

        ok = await self.waker.wait(key, ready_now, lambda: self.forwarder.probe(health), timeout,
                                   on_start=lambda: self.metrics.wakeups.inc((key,)))
        self.metrics.cold_start_wait.observe((key,), time.perf_counter() - started)
        if not ok:
            raise UpstreamError(503, "cold_start_timeout", f"model '{model.name}' has no ready pods and did not "
                                f"become ready within {timeout:g} s; it may still be starting",
                                self.settings.retry_after)

    # --- forwarding -----------------------------------------------------------------

    async def open(self, model: Model, route: str, payload: bytes, timeouts: Timeouts,
                   retries: Optional[int] = None, sent: Optional[Sent] = None) -> Upstream:
        """Hold if needed, then send; a refused connection means no ready pods: hold once more.

        With ``sent`` (the express lane's first attempt, sent while the model was up), no hold.
        """
        if sent is None:
            await self.ensure_ready(model)
        url = self.base_url(model) + route
        try:
            response = await self.forwarder.open(model.name, url, payload, timeouts, retries=retries, sent=sent)
        except UpstreamError as exc:
            if exc.kind != "connect":
                raise
            self.waker.mark_down(model.object_name)
            await self.ensure_ready(model, trust_status=False)
            response = await self.forwarder.open(model.name, url, payload, timeouts, retries=retries)
        self.waker.mark_ok(model.object_name)
        return response

    async def call_json(self, model: Model, route: str, payload: bytes, timeouts: Timeouts,
                        retries: Optional[int] = None, sent: Optional[Sent] = None) -> Any:
        response = await self.open(model, route, payload, timeouts, retries, sent)
        return self.decode_json(model, await self.forwarder.read(response))

    def answered_json(self, model: Model, response: Upstream) -> Any:
        """:meth:`call_json`'s end for a 2xx response that has all arrived (the express lane's flight)."""
        self.waker.mark_ok(model.object_name)
        return self.decode_json(model, self.forwarder.read_now(response))

    @staticmethod
    def decode_json(model: Model, data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(502, "bad_response", f"model '{model.name}' answered a body that is not JSON") from None

    async def events(self, model: Model, response: Upstream, timeouts: Timeouts) -> AsyncIterator[Event]:
        """The backend's stream as events, each as soon as it is complete."""
        content_type = response.headers.get("content-type", "")
        sse = "event-stream" in content_type or not any(t in content_type for t in ("json", "ndjson"))
        splitter = EventSplitter(sse)
        try:
            async for chunk in response.chunks():
                for event in splitter.feed(chunk):
                    yield event
            for event in splitter.flush():
                yield event
        except EventTooLarge as exc:
            raise UpstreamError(502, "too_large", f"model '{model.name}': {exc}") from None


async def guarded_stream(slot: Slot, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Forward ``events``; a failure mid-stream becomes an SSE ``error`` event.

    The backend response is closed by the stream's ``on_close`` (see
    ``routes._stream_response``), not here: a generator that never started
    (the client left before the first chunk) runs no ``finally``.
    """
    try:
        async for chunk in events:
            yield chunk
    except UpstreamError as exc:
        slot.finish(200, exc.kind)
        yield sse_error(exc.status, exc.detail)
    except BadBackendBody as exc:
        slot.finish(200, "bad_response")
        yield sse_error(502, f"model '{slot.model.name}' streamed an event of the wrong shape: {exc}")


#: How long a request runs before a task starts watching for its client to disconnect.
DISCONNECT_WATCH_DELAY = 0.05


class _DisconnectWatch:
    """Started by a timer, not per request: most answers are done before it fires."""

    __slots__ = ("task", "receive", "listener", "gone")

    def __init__(self, task: "asyncio.Task[Any]", receive: Any):
        self.task = task
        self.receive = receive
        self.listener: Optional[asyncio.Task[None]] = None
        self.gone = False

    def start(self) -> None:
        self.listener = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                self.task.cancel()
                return


async def unless_gone(task: "asyncio.Task[Any]", work: Awaitable[T], gone: Callable[[], bool]) -> T:
    """Await ``work`` in ``task``, whose disconnect watcher cancels it when the client leaves.

    Once ``gone()``, that cancellation, or a failure it caused, becomes
    :class:`ClientGone`; any other cancellation (server shutdown) propagates.
    """
    try:
        return await work
    except asyncio.CancelledError:
        if gone() and task.uncancel() == 0:
            raise ClientGone() from None
        raise
    except Exception:
        if gone():  # the client left while ``work`` was failing: nobody to tell
            task.uncancel()
            raise ClientGone() from None
        raise


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; cancel it (and raise :class:`ClientGone`) if the client leaves first.

    ``work`` runs in the calling task.  If it is still running after
    :data:`DISCONNECT_WATCH_DELAY`, a listener task starts watching for the
    disconnect and cancels the caller when it comes; a cancellation from
    anywhere else (server shutdown) propagates as before.  Why a timer and not
    a listener from the start: a task per request cost about 13 µs of CPU (its
    creation, first step and cancellation), and at load nearly every answer is
    back before 50 ms.  A client that leaves earlier is still noticed: the
    listener's first ``receive()`` returns the disconnect at once, so the
    backend request is cancelled at most 50 ms later than it could have been.
    """
    task = asyncio.current_task()
    assert task is not None
    watch = _DisconnectWatch(task, request.receive)
    timer = asyncio.get_running_loop().call_later(DISCONNECT_WATCH_DELAY, watch.start)
    try:
        return await unless_gone(task, work, lambda: watch.gone)
    finally:
        timer.cancel()
        if watch.listener is not None:
            watch.listener.cancel()
