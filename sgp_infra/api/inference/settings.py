"""Limits and timeouts of inference forwarding, with their defaults in one place.

Per model, from the catalogue (the ``inference`` extension of the template or
model, resolved onto :attr:`~sgp_infra.catalog.Model.inference`):

* ``connect_timeout_seconds`` (default 5): time to open a connection;
* ``read_timeout_seconds`` (default 300; 60 for EMBEDDING and RERANKING):
  time to the response headers, the longest gap between two chunks of a
  stream, and the whole answer of a call that is not streamed;
* ``cold_start_hold_seconds`` (default 50): how long one request is held
  while the model wakes from zero before it gets a 503 with ``Retry-After``.

The wake-up itself goes on for the model's cold-start budget,
``readiness_initial_delay_seconds`` (v5: ``readiness_delay``) plus
:attr:`InferenceSettings.cold_start_margin`, whether or not anyone still
waits, so the clients' own retries land on a warm model.

Everything else (body, header and decompression limits, retries, the pool) is
the same for every model: :class:`InferenceSettings`.  A v5 ``/v5/inference``
call may lower its own read timeout with
``inference_configuration.timeout_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from ...catalog import Model


class Timeouts(NamedTuple):
    """One call's timeouts in seconds."""

    connect: float
    read: float
    #: How long one request waits for a waking model.
    hold: float
    #: How long a wake-up polls the model before giving up.
    cold_start: float


@dataclass
class InferenceSettings:
    #: Largest request body accepted (413 beyond it).
    max_body_bytes: int = 16 * 1024 * 1024
    #: Largest backend answer read for a call that is not streamed, counted after decompression (502 beyond it).
    max_response_bytes: int = 64 * 1024 * 1024
    #: Largest single event of a backend stream, after decompression (the stream ends with an error event).
    max_event_bytes: int = 8 * 1024 * 1024
    #: A backend response's status line or any header line, in bytes (502 beyond it).
    max_response_header_line: int = 8190
    #: Headers in a backend response (502 beyond it).
    max_response_headers: int = 100
    #: Deepest nesting of arrays and objects accepted in a request body (400 beyond it).
    max_json_depth: int = 64
    #: Added to a model's readiness delay: its cold-start budget (scheduling, image pull).
    cold_start_margin: float = 60.0
    #: Retries after the first attempt, for connection refused and 503-before-any-byte.
    retries: int = 2
    backoff: float = 0.1
    #: How often a waking model's health is polled.
    wake_poll_interval: float = 0.5
    #: How long a successful answer or probe counts as "the model is up".
    ready_fresh_for: float = 15.0
    #: Seconds suggested in ``Retry-After`` when a model is unavailable and says nothing usable.
    retry_after: int = 5
    #: Bounds put on a backend's own ``Retry-After`` before it is passed on.
    retry_after_min: int = 1
    retry_after_max: int = 300
    #: Seconds an idle backend connection is kept for reuse: below the 5 s idle
    #: timeout of uvicorn (the usual model-server front end), so the API, not
    #: the server, closes idle connections.
    keepalive_seconds: float = 4.0
    #: Backend connections open at once, over every model.
    pool_limit: int = 1024
    #: Watch the models' EndpointSlices and send calls to their pods: ``None`` (default) when model
    #: status comes from Kubernetes (``serve --status kubernetes``, the default in a pod).
    endpoint_slices: Optional[bool] = None
    #: A ``kubernetes_asyncio`` ``Configuration`` for the EndpointSlice watch (tests); ``None``: the pod's own.
    kube_configuration: Any = None

    def timeouts(self, model: Model, read: Optional[float] = None) -> Timeouts:
        """``model``'s timeouts from the catalogue; ``read`` lowers the read timeout for one call."""
        inference = model.inference
        read_timeout = inference.read_timeout_seconds if read is None else min(read, inference.read_timeout_seconds)
        return Timeouts(float(inference.connect_timeout_seconds), float(read_timeout),
                        float(inference.cold_start_hold_seconds),
                        float(model.readiness_initial_delay_seconds) + self.cold_start_margin)

    def in_flight_cap(self, model: Model) -> int:
        """``per_worker × max_workers``: what the autoscaler can serve at full scale."""
        return max(1, model.per_worker * model.max_workers)
