"""One inference call's dealings with its model: admission, cold-start hold, routing, forwarding.

The :class:`Gateway` is created once per app (``install``) and owns the
upstream client (:mod:`.upstream`, the connection pool), the waker (one poll
task per waking model), the per-model in-flight counts behind the 429 cap and
the routing state (:class:`~.routing.Routing`: every model's pods, their
calls in flight and the pods being skipped).

Where a call goes and how it gets there:

* :meth:`Gateway.pick` chooses the destination of one attempt: a pod of the
  model (its strategy, the call's prefix key, the pods already tried
  excluded), else its Service (``base_url``: the ``serve --backend`` URL or
  the in-cluster Service) when no pod is known or the strategy is ``service``;
* :meth:`~.upstream.Upstream.attempt` forwards one attempt to one URL;
* :meth:`Gateway.forward` is the loop between them: hold while the model
  wakes (only when no ready pod is known), then attempts with the only safe
  retries (connection refused, 503), each retry on a pod not tried yet.

A call is counted in flight on its pod (a :class:`PodLease`) from its attempt
until the answer is closed, streams included; a pod that refused, reset, did
not accept a connection in time or answered 503 is skipped for the model's
``inference.pod_skip_seconds`` (catalogue; 5 s by default).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable, Mapping, Optional

import orjson
from prometheus_client import Gauge

from ...catalog import Model
from ..common import model_base_url
from ..status import StatusSource
from .metrics import InferenceMetrics
from .routing import Lease, Replicas, Routing, Strategy, check_strategy
from .settings import InferenceSettings, Timeouts
from .streams import Event, EventSplitter, EventTooLarge
from .upstream import Answer, Upstream, UpstreamError, parse_json
from .wake import Waker, status_ready

#: Model states that fail a request at once (503), without a hold.
_FAILED = ("failed", "deployment_timeout")


class Slot:
    """One admitted call: counted in flight until :meth:`finish` runs (once)."""

    __slots__ = ("gateway", "model", "operation", "label", "done")

    def __init__(self, gateway: Gateway, model: Model, operation: str):
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


class PodLease:
    """One attempt counted in flight on its pod: the routing :class:`~.routing.Lease` and the
    per-pod gauge, released together, once (a lease for the Service counts nothing).
    ``on_release`` runs after the release (the gateway forgets a departed pod's series)."""

    __slots__ = ("lease", "gauge", "on_release")

    def __init__(self, lease: Lease, gauge: Optional[Gauge], on_release: Optional[Callable[[], None]] = None):
        self.lease = lease
        self.gauge = gauge
        self.on_release = on_release
        if gauge is not None:
            gauge.inc()

    def release(self) -> None:
        if not self.lease.released:
            self.lease.release()
            self._released()

    def failed(self) -> None:
        """The pod looks down: skip it for a while, and release."""
        if not self.lease.released:
            self.lease.failed()
            self._released()

    def _released(self) -> None:
        if self.gauge is not None:
            self.gauge.dec()
        if self.on_release is not None:
            self.on_release()


def pod_label(pod: str) -> str:
    """A pod's ``pod`` metric label: its base URL without the scheme (``10.1.2.3:8000``)."""
    return pod.partition("://")[2] or pod


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
        #: Every model's pods, by object name; fed by the endpoint sources (``install``).
        self.routing = Routing()

    async def aclose(self) -> None:
        await self.waker.close()
        await self.upstream.aclose()

    # --- addressing ---------------------------------------------------------

    def base_url(self, model: Model) -> str:
        """``model``'s Service: the ``serve --backend`` URL (the first of a list), else its
        in-cluster Service.  Used when no pod is known, with the ``service`` strategy, and
        for the cold-start probe when no pod is known."""
        return model_base_url(model, self.backends, self.namespace)

    def replicas(self, model: Model) -> Replicas:
        """``model``'s routing state, with its catalogue strategy, bound factor and pod skip
        time; the load bound's floor is its ``per_worker`` (the calls one pod serves at once)."""
        inference = model.inference
        strategy: Strategy = check_strategy(inference.routing)
        return self.routing.replicas(model.object_name, strategy, inference.load_bound_factor,
                                     inference.pod_skip_seconds, max(1, model.per_worker))

    def pick(self, model: Model, replicas: Replicas, key: Optional[bytes], tried: set[str]) -> tuple[str, PodLease]:
        """The base URL of one attempt, counted in flight there until the lease is released.

        A pod by the model's strategy (``key``: the call's prefix key) among those
        not ``tried`` yet; when every pod has been tried, among all of them again
        (the skips still apply).  No pod known, or the ``service`` strategy: the Service.
        """
        choice = replicas.pick(key, exclude=tried)
        if choice.outcome == "exhausted":
            tried.clear()
            choice = replicas.pick(key)
        label = model.object_name
        rm = self.metrics.routing
        rm.routing.labels(label, choice.outcome).inc()
        if choice.pod is None:
            return self.base_url(model), PodLease(replicas.acquire(choice), None)
        tried.add(choice.pod)
        pod = pod_label(choice.pod)
        rm.pod_requests.labels(label, pod).inc()
        return choice.pod, PodLease(replicas.acquire(choice), rm.pod_in_flight.labels(label, pod),
                                    lambda: self.forget_if_gone(label, choice.pod))

    def on_pods_change(self, name: str, pods: frozenset[str]) -> None:
        """A model's ready pods changed (the :mod:`.endpoints` callback): update the routing
        state, and remove the metric series of the pods that left, at once for those with
        no call in flight from here, else when their last call ends (:class:`PodLease`)."""
        replicas = self.routing.models.get(name)
        before = replicas.pods if replicas is not None else frozenset()
        self.routing.on_change(name, pods)
        for pod in before:
            self.forget_if_gone(name, pod)

    def forget_if_gone(self, name: str, pod: Optional[str]) -> None:
        """Remove ``pod``'s series if it is no longer one of the model's ready pods and
        has no call in flight from this process (series exist only for routed models)."""
        replicas = self.routing.models.get(name)
        if pod is None or replicas is None or pod in replicas.pods or replicas.load(pod) > 0:
            return
        self.metrics.routing.forget(name, pod_label(pod))

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
        """``True`` if :meth:`ensure_ready` would return at once (the model is up: no hold, no error).

        Ready pods known (EndpointSlices, a ``--backend`` list) count as up too.
        """
        key = model.object_name
        st = self.status.get(key)
        return st.status not in _FAILED and (status_ready(st) or self.waker.recently_ok(key)
                                             or bool(self.routing.pods(key)))

    async def probe(self, model: Model) -> bool:
        """``True`` if the model answers its healthcheck: any of its known pods, else its Service."""
        pods = sorted(self.routing.pods(model.object_name)) or [self.base_url(model)]
        results = await asyncio.gather(*(self.upstream.probe(p + model.healthcheck_route) for p in pods))
        return any(results)

    async def ensure_ready(self, model: Model, timeouts: Timeouts, *, trust_status: bool = True) -> None:
        """Return when the model can take the call; hold it while the model wakes, at most ``timeouts.hold``."""
        if trust_status and self.ready_now(model):
            return
        key = model.object_name
        st = self.status.get(key)
        if st.status in _FAILED:
            raise UpstreamError(503, "model_failed", f"model '{model.name}' is {st.status}"
                                + (f": {st.reason}" if st.reason else ""), 60)
        started = time.monotonic()

        def ready_now() -> bool:
            return trust_status and status_ready(self.status.get(key))

        ready = await self.waker.wait(key, ready_now, lambda: self.probe(model), timeouts.hold,
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
                      retries: Optional[int] = None, key: Optional[bytes] = None) -> Answer:
        """Hold while the model wakes, then send; the 2xx :class:`Answer` once its headers arrived.

        ``key``: the call's prefix key for ``prefix-affinity`` (:func:`~.routing.prefix_key`;
        ``None`` routes by load).  The answer keeps the call counted on its pod until it is closed.

        Retried, with exponential backoff, only when nothing can have reached
        the model: a refused connection and a 503 answer, each time on a pod
        not tried yet when there is one.  Refused to the end means no ready
        pods: the call is held once more (the wake-up probes the model itself
        this time), then sent again.
        """
        await self.ensure_ready(model, timeouts)
        try:
            answer = await self._attempts(model, route, payload, timeouts, retries, key)
        except UpstreamError as exc:
            if exc.kind != "connect":
                raise
            self.waker.mark_down(model.object_name)
            await self.ensure_ready(model, timeouts, trust_status=False)
            answer = await self._attempts(model, route, payload, timeouts, retries, key)
        self.waker.mark_ok(model.object_name)
        return answer

    async def _attempts(self, model: Model, route: str, payload: bytes, timeouts: Timeouts,
                        retries: Optional[int], key: Optional[bytes] = None) -> Answer:
        retries = self.settings.retries if retries is None else retries
        replicas = self.replicas(model)
        tried: set[str] = set()
        attempt = 0
        while True:
            base, lease = self.pick(model, replicas, key, tried)
            url = base + route
            try:
                answer = await self.upstream.attempt(model.name, url, payload, timeouts)
            except UpstreamError as exc:
                if exc.pod_down:
                    lease.failed()
                else:
                    lease.release()
                if exc.kind != "connect" or attempt >= retries:
                    if exc.kind == "connect":
                        exc.detail = f"{exc.detail} after {attempt + 1} attempts"
                    raise
            except BaseException:  # cancelled while connecting: the call is over
                lease.release()
                raise
            else:
                answer.on_close = lease.release
                if answer.status == 503:
                    lease.failed()
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
                        retries: Optional[int] = None, key: Optional[bytes] = None) -> Any:
        """Forward and read the whole answer as JSON (502 if it is not JSON or over the size cap)."""
        answer = await self.forward(model, route, payload, timeouts, retries, key)
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
