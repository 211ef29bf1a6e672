"""One inference call's dealings with its model: admission, cold-start hold, forwarding.

The :class:`Gateway` is created once per app (``install``) and owns the
upstream client (:mod:`.upstream`, the connection pool), the waker (one poll
task per waking model) and the per-model in-flight counts behind the 429 cap.

Where a call goes and how it gets there, as hooks for routing across replicas:

* :meth:`Gateway.base_url` chooses the base URL of one attempt (today the
  ``serve --backend`` override, else the model's Service);
* :meth:`~.upstream.Upstream.attempt` forwards one attempt to one URL;
* :meth:`Gateway.forward` is the loop between them: hold while the model
  wakes, then attempts with the only safe retries (connection refused, 503).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Mapping, Optional

import orjson

from ...catalog import Model
from ..common import model_base_url
from ..status import StatusSource
from .metrics import InferenceMetrics
from .settings import InferenceSettings, Timeouts
from .streams import Event, EventSplitter, EventTooLarge
from .upstream import Answer, Upstream, UpstreamError, parse_json
from .wake import Waker, status_ready

#: Model states that fail a request at once (503), without a hold.
_FAILED = ("failed", "deployment_timeout")


class Slot:
    """One admitted call: counted in flight until :meth:`finish` runs (once)."""

    __slots__ = ("gateway", "model", "operation", "label", "done")

    def __init__(self, gateway: "Gateway", model: Model, operation: str):
        self.gateway = gateway
        self.model = model
        self.operation = operation
        self.label = model.object_name
        self.done = False

    def finish(self, code: int, error_kind: Optional[str] = None) -> None:
        """Stop counting the call in flight and count its outcome (the first call wins)."""
        if self.done:
            return
        self.done = True
        g = self.gateway
        g.in_flight[self.label] -= 1
        g.metrics.in_flight_of(self.label).dec()
        g.metrics.answered(self.label, self.operation, code, error_kind)


class Gateway:
    def __init__(self, settings: InferenceSettings, metrics: InferenceMetrics, status: StatusSource,
                 backends: Mapping[str, str], namespace: str):
        self.settings = settings
        self.metrics = metrics
        self.status = status
        self.backends = dict(backends)
        self.namespace = namespace
        self.upstream = Upstream(settings, metrics)
        self.waker = Waker(settings.wake_poll_interval, settings.ready_fresh_for)
        #: Calls in flight in this process, per model object name: the 429 cap's count.
        self.in_flight: dict[str, int] = {}

    async def aclose(self) -> None:
        await self.waker.close()
        await self.upstream.aclose()

    # --- addressing ---------------------------------------------------------

    def base_url(self, model: Model) -> str:
        """Where one attempt of a call to ``model`` goes: the ``serve --backend`` override,
        else the model's in-cluster Service.  The one place a destination is chosen."""
        return model_base_url(model, self.backends, self.namespace)

    def timeouts(self, model: Model, read: Optional[float] = None) -> Timeouts:
        """``model``'s timeouts from the catalogue (``read`` lowers the read timeout for one call)."""
        return self.settings.timeouts(model, read)

    # --- admission ------------------------------------------------------------

    def admit(self, model: Model, operation: str) -> Slot:
        """Count the call in flight, or a 429 beyond ``per_worker × max_workers``."""
        label = model.object_name
        cap = self.settings.in_flight_cap(model)
        current = self.in_flight.get(label, 0)
        if current >= cap:
            self.metrics.answered(label, operation, 429, "over_capacity")
            raise UpstreamError(429, "over_capacity", f"model '{model.name}' already has {current} requests in "
                                f"flight, its limit (per_worker {model.per_worker} x max_workers "
                                f"{model.max_workers}); retry shortly", 1)
        self.in_flight[label] = current + 1
        self.metrics.in_flight_of(label).inc()
        return Slot(self, model, operation)

    # --- readiness ----------------------------------------------------------------

    def ready_now(self, model: Model) -> bool:
        """``True`` if :meth:`ensure_ready` would return at once (the model is up: no hold, no error)."""
        key = model.object_name
        st = self.status.get(key)
        return st.status not in _FAILED and (status_ready(st) or self.waker.recently_ok(key))

    async def ensure_ready(self, model: Model, timeouts: Timeouts, *, trust_status: bool = True) -> None:
        """Return when the model can take the call; hold it while the model wakes, at most ``timeouts.hold``."""
        if trust_status and self.ready_now(model):
            return
        key = model.object_name
        st = self.status.get(key)
        if st.status in _FAILED:
            raise UpstreamError(503, "model_failed", f"model '{model.name}' is {st.status}"
                                + (f": {st.reason}" if st.reason else ""), 60)
        health = self.base_url(model) + model.healthcheck_route
        started = time.monotonic()

        def ready_now() -> bool:
            return trust_status and status_ready(self.status.get(key))

        ready = await self.waker.wait(key, ready_now, lambda: self.upstream.probe(health), timeouts.hold,
                                      timeouts.cold_start, on_start=self.metrics.wakeups.labels(key).inc)
        self.metrics.cold_start_wait.labels(key).observe(time.monotonic() - started)
        if ready is None:
            raise UpstreamError(503, "cold_start_hold", f"model '{model.name}' has no ready pods yet; it is "
                                f"starting (held {timeouts.hold:g} s), retry shortly", self.settings.retry_after)
        if not ready:
            raise UpstreamError(503, "cold_start_timeout", f"model '{model.name}' has no ready pods and did not "
                                f"become ready within {timeouts.cold_start:g} s; it may still be starting",
                                self.settings.retry_after)

    # --- forwarding -----------------------------------------------------------------

    async def forward(self, model: Model, route: str, payload: bytes, timeouts: Timeouts,
                      retries: Optional[int] = None) -> Answer:
        """Hold while the model wakes, then send; the 2xx :class:`Answer` once its headers arrived.

        Retried, with exponential backoff, only when nothing can have reached
        the model: a refused connection and a 503 answer.  Refused to the end
        means no ready pods: the call is held once more (the wake-up probes
        the model itself this time), then sent again.
        """
        await self.ensure_ready(model, timeouts)
        try:
            answer = await self._attempts(model, route, payload, timeouts, retries)
        except UpstreamError as exc:
            if exc.kind != "connect":
                raise
            self.waker.mark_down(model.object_name)
            await self.ensure_ready(model, timeouts, trust_status=False)
            answer = await self._attempts(model, route, payload, timeouts, retries)
        self.waker.mark_ok(model.object_name)
        return answer

    async def _attempts(self, model: Model, route: str, payload: bytes, timeouts: Timeouts,
                        retries: Optional[int]) -> Answer:
        retries = self.settings.retries if retries is None else retries
        attempt = 0
        while True:
            url = self.base_url(model) + route
            try:
                answer = await self.upstream.attempt(model.name, url, payload, timeouts)
            except UpstreamError as exc:
                if exc.kind != "connect" or attempt >= retries:
                    if exc.kind == "connect":
                        exc.detail = f"{exc.detail} after {attempt + 1} attempts"
                    raise
            else:
                if answer.status == 503 and attempt < retries:
                    answer.close()
                elif answer.status >= 300:
                    raise await self.upstream.status_error(answer, url)
                elif answer.encoding_error is not None:
                    answer.close()
                    raise UpstreamError(502, "protocol", f"model '{model.name}' answered with a "
                                        f"{answer.encoding_error}")
                else:
                    return answer
            attempt += 1
            await asyncio.sleep(self.settings.backoff * (2 ** (attempt - 1)))

    async def call_json(self, model: Model, route: str, payload: bytes, timeouts: Timeouts,
                        retries: Optional[int] = None) -> Any:
        """Forward and read the whole answer as JSON (502 if it is not JSON or over the size cap)."""
        answer = await self.forward(model, route, payload, timeouts, retries)
        return parse_json(model.name, await answer.read(self.settings.max_response_bytes))

    async def events(self, model: Model, answer: Answer) -> AsyncIterator[Event]:
        """The backend's stream as events, each as soon as it is complete."""
        content_type = answer.headers.get("content-type", "")
        sse = "event-stream" in content_type or not any(t in content_type for t in ("json", "ndjson"))
        splitter = EventSplitter(sse, self.settings.max_event_bytes)
        try:
            async for chunk in answer.chunks():
                for event in splitter.feed(chunk):
                    yield event
            for event in splitter.flush():
                yield event
        except EventTooLarge as exc:
            raise UpstreamError(502, "too_large", f"model '{model.name}': {exc}") from None


def json_answer_bytes(model: Model, body: Any) -> bytes:
    """``body`` (built from a backend's answer) as JSON; a 502 if the backend's JSON cannot be re-encoded
    (nested deeper than the encoder allows)."""
    try:
        return orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise UpstreamError(502, "bad_response", f"model '{model.name}' answered JSON that cannot be passed on "
                            f"({exc})") from None
