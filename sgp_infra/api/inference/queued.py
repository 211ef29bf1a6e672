"""ASYNC models on the inference routes: the "forward to the backend" step becomes "enqueue and wait".

An ASYNC model is never called directly (docs/async.md): a v4/v5 inference
call to one is queued as a task, and the route waits for the task's answer up
to the call's timeout.  Everything else about the call is the sync path's
(auth, body checks, admission and in-flight accounting, protocol translation
of request and answer, metrics, errors): :func:`model_json` stands in for
:meth:`.gateway.Gateway.call_json`, the one step that differs.

* The task's answer (``SUCCESS``) is the model's JSON, translated like a
  synchronous answer.
* A ``FAILURE`` is the error the sync path gives for the same model answer
  (a passed-through 4xx, else a 502).
* Not final within the timeout: **202** with ``{"task_id", "status",
  "detail"}`` (``/v5/inference`` adds ``"object": "generic_inference",
  "response": null``), so the caller can poll ``GET /v1/async-tasks/{task_id}``.
  A 2xx because the official clients retry 408/5xx (which would queue the
  task again) and parse any 2xx JSON leniently into their response type,
  keeping unknown fields: ``resp.task_id`` works on what they return.
* Streaming is refused with a 400: a task's answer is one JSON document.
"""

from __future__ import annotations

from typing import Any, Optional

import orjson
from starlette.responses import Response

from ...catalog import Model
from ..errors import ApiError
from ..tasks import TaskOutcome, enqueue_and_wait
from .call import Streamed, Work
from .gateway import Gateway
from .settings import Timeouts
from .upstream import PASS_THROUGH_4XX, UpstreamError

#: The ``generic_inference`` fields the 202 of ``/v5/inference`` carries, so it parses as an InferenceResponse.
V5_INFERENCE_PENDING = {"object": "generic_inference", "response": None}


class TaskPending(Exception):
    """The task was not final within the call's timeout: answered with a 202 naming it."""

    def __init__(self, outcome: TaskOutcome):
        super().__init__(outcome.task_id)
        self.outcome = outcome


def refuse_stream(model: Model) -> None:
    """400 for a streaming call to an ASYNC model (checked before the call is admitted)."""
    if model.is_async:
        raise ApiError(400, f"model '{model.name}' is an ASYNC endpoint: its answers are not streamed; "
                            "call without stream, or queue a task with POST /v1/async-tasks")


async def model_json(app: Any, gw: Gateway, model: Model, route: str, payload: bytes, timeouts: Timeouts,
                     retries: Optional[int] = None, wait: Optional[float] = None,
                     key: Optional[bytes] = None) -> Any:
    """The model's JSON answer to ``payload``: forwarded (sync models) or run as a task (ASYNC models).

    For an ASYNC model the task waits up to ``wait`` seconds (default: the
    model's read timeout); ``route`` and ``retries`` do not apply (the
    forwarder calls the model's ``predict_route``; ``max_deliveries`` bounds
    the attempts).  Raises :class:`TaskPending` when the wait ends first.
    ``key`` is the call's prefix key, for routing a sync call to a pod.
    """
    if not model.is_async:
        return await gw.call_json(model, route, payload, timeouts, retries, key=key)
    try:
        outcome = await enqueue_and_wait(app, model, payload, timeouts.read if wait is None else wait)
    except ApiError as exc:  # the broker cannot take the task (503), or the body is not JSON
        raise UpstreamError(exc.status, "task_queue", exc.detail, exc.extra.get("retry_after_seconds")) from None
    record = outcome.record
    if not outcome.done or record is None:
        raise TaskPending(outcome)
    if record.status == "SUCCESS":
        return record.result
    raise failure_error(model, outcome)


def failure_error(model: Model, outcome: TaskOutcome) -> UpstreamError:
    """The sync path's error for the answer that failed the task (``status_error`` in .upstream)."""
    record = outcome.record
    assert record is not None
    code = record.status_code
    said = f"task {outcome.task_id} failed: {record.traceback or 'no error text'}"
    if code in PASS_THROUGH_4XX:
        return UpstreamError(code, "upstream_4xx", f"model '{model.name}' rejected the request ({said})")
    kind = "upstream_5xx" if code is not None and code >= 500 else "upstream_4xx" if code else "task_failed"
    return UpstreamError(502, kind, f"model '{model.name}' {said}")


def pending_response(outcome: TaskOutcome, extra: Optional[dict[str, Any]] = None) -> Response:
    """The 202 for a task still queued or running (see the module doc)."""
    body = {**(extra or {}), "task_id": outcome.task_id, "status": outcome.status,
            "detail": f"the task is still {outcome.status}; poll GET /v1/async-tasks/{outcome.task_id}"}
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")


def answering_pending(work: Work, extra: Optional[dict[str, Any]] = None) -> Work:
    """``work`` with :class:`TaskPending` answered by :func:`pending_response`."""

    async def run() -> Response | Streamed:
        try:
            return await work()
        except TaskPending as pending:
            return pending_response(pending.outcome, extra)

    return run


__all__ = ["TaskPending", "V5_INFERENCE_PENDING", "answering_pending", "failure_error", "model_json",
           "pending_response", "refuse_stream"]
