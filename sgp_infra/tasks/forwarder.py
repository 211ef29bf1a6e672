"""The ASYNC forwarder: pulls one model's tasks from JetStream and calls the model container.

One runs beside every ASYNC model container (the pod's ``forwarder``
sidecar) and, locally, beside each ``serve --backend`` of an ASYNC model.
For each task it pulls (never more than ``per_worker`` at once):

1. on a redelivery, reads the task's record; a task already
   ``SUCCESS``/``FAILURE`` is a duplicate delivery and is only acknowledged.
   A first delivery needs no read: the message carries the revision of the
   ``PENDING`` record the API wrote before publishing it;
2. on a delivery past ``max_deliveries`` (the one extra delivery the consumer
   allows) records ``FAILURE`` without calling the model: the worker of the
   last attempt died or overran the ack wait;
3. POSTs its args to the model's ``predict_route`` (bounded by
   ``task_timeout_seconds``), and marks it ``STARTED`` if the model has not
   answered within :data:`STARTED_AFTER_SECONDS` (a fast task goes from
   ``PENDING`` to its answer in one write);
4. records the answer (``SUCCESS``), or the failure with the status code and
   error text when it is final: a 4xx other than 408/429 (the input is
   wrong, retrying cannot help) or the last allowed attempt; any other failure
   is negatively acknowledged and JetStream redelivers it after a back-off;
5. acknowledges only after the record is written, then calls the task's
   ``callback_url`` once if this forwarder wrote the final state.

Records are written with compare-and-set (a create when there is none yet),
so however many times a task runs, one answer is recorded and later writers
leave it alone.  A forwarder killed mid-task never acknowledges: JetStream
redelivers after the ack wait.
The acknowledgement is not confirmed (one publish, no round trip): if it is
lost, the redelivery finds the final record and is acknowledged as a duplicate.

Per task that is one JetStream round trip (the final write) besides the pull,
and one call to the model on a pooled aiohttp session.

:meth:`Forwarder.stop` (SIGTERM) stops pulling, lets held tasks finish within
the drain time and returns the rest to the queue (``nak``) for another worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

import aiohttp
import orjson
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError

from ..plan.nats import ModelQueue
from .broker import BrokerUnavailable, TaskBroker
from .metrics import TaskMetrics
from .records import TaskMessage, TaskRecord

log = logging.getLogger("sgp_infra.forwarder")

#: Seconds one pull waits for tasks before checking whether to stop.
FETCH_WAIT_SECONDS = 1.0
#: Seconds a pull for several tasks waits when the queue had a backlog at the last pull.
BACKLOG_WAIT_SECONDS = 0.01
#: Seconds a healthy model is trusted before its health route is asked again.
HEALTH_RECHECK_SECONDS = 5.0
#: Back-off before a failed attempt is redelivered: this times the delivery count, capped.
RETRY_DELAY_SECONDS = 0.5
MAX_RETRY_DELAY_SECONDS = 30.0
#: A task still running after this many seconds is marked ``STARTED`` (faster ones are not: one write fewer).
STARTED_AFTER_SECONDS = 0.1
#: Errors from the model that retrying cannot fix.
FINAL_CLIENT_ERRORS = frozenset(range(400, 500)) - {408, 429}
#: Longest error text kept in a FAILURE record.
MAX_ERROR_CHARS = 4000


def pending_after(msgs: list[Any]) -> int:
    """How many tasks still wait for the consumer after ``msgs`` (JetStream stamps it on each delivery)."""
    try:
        return max(0, int(msgs[-1].metadata.num_pending or 0)) if msgs else 0
    except (AttributeError, ValueError, TypeError):
        return 1  # unknown: probe once more (an empty probe just ends the backlog)


class Forwarder:
    """Pull, call, record, acknowledge: one model's tasks (see the module doc)."""

    def __init__(self, broker: TaskBroker, queue: ModelQueue, backend: str, predict_route: str,
                 health_route: str = "/readyz", metrics: Optional[TaskMetrics] = None) -> None:
        self.broker = broker
        self.queue = queue
        self.backend = backend.rstrip("/")
        self.predict_route = predict_route
        self.health_route = health_route
        self.metrics = metrics or TaskMetrics()
        #: One pooled session for every call to the model (created on the running loop: :meth:`session`).
        self._session: Optional[aiohttp.ClientSession] = None
        self._stopping = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], Any] = {}
        self._loop_task: Optional[asyncio.Task[None]] = None
        self.psub: Any = None
        self._healthy_until = 0.0
        #: Tasks waiting for this consumer, as the last pulled message said.
        self._backlog = 0

    # -- readiness -------------------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """The pooled HTTP session (at most ``per_worker`` connections to the model, kept alive)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"content-type": "application/json"},  # every body sent is JSON
                connector=aiohttp.TCPConnector(limit=max(1, self.queue.per_worker)),
                timeout=aiohttp.ClientTimeout(total=float(self.queue.task_timeout_seconds), sock_connect=10.0))
        return self._session

    async def model_healthy(self) -> bool:
        try:
            async with self.session().get(self.backend + self.health_route,
                                          timeout=aiohttp.ClientTimeout(total=2.0)) as response:
                return response.status < 400
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def ready(self) -> bool:
        """Ready when NATS is connected and the model container answers its health route."""
        return self.broker.ready and await self.model_healthy()

    # -- the pull loop -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self.run(), name=f"forwarder-{self.queue.consumer}")

    async def run(self) -> None:
        while not self._stopping.is_set():
            if not self.broker.ready:
                await self._pause(0.2)
                continue
            if self.psub is None:
                try:
                    self.psub = await self.broker.js.pull_subscribe_bind(
                        self.queue.consumer, self.broker.layout.stream)
                except (NatsError, asyncio.TimeoutError) as exc:
                    log.warning("cannot bind to consumer %s: %s", self.queue.consumer, exc)
                    await self._pause(1.0)
                    continue
            # The model must answer before tasks are taken from the queue for it (checked again
            # every few seconds, not per task).
            if time.monotonic() >= self._healthy_until:
                if not await self.model_healthy():
                    await self._pause(0.5)
                    continue
                self._healthy_until = time.monotonic() + HEALTH_RECHECK_SECONDS
            if len(self._inflight) >= self.queue.per_worker:
                await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            free = self.queue.per_worker - len(self._inflight)
            # Each delivered message says how many more wait for this consumer.  With a backlog, one pull
            # takes up to every free slot's task at once (JetStream answers at once with what is
            # waiting).  Otherwise pull one task and wait for it: a waiting pull for several tasks holds
            # the first one back until the others arrive or the pull expires.
            if self._backlog:
                batch, wait = min(free, self._backlog), BACKLOG_WAIT_SECONDS
            else:
                batch, wait = 1, FETCH_WAIT_SECONDS
            try:
                msgs = await self.psub.fetch(batch=batch, timeout=wait)
            except (NatsTimeoutError, asyncio.TimeoutError):
                self._backlog = 0
                continue
            except NatsError as exc:
                log.debug("fetch failed: %s", exc)
                await self._pause(0.2)
                continue
            self._backlog = pending_after(msgs)
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg))
                self._inflight[task] = msg
                task.add_done_callback(self._inflight.pop)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def stop(self, drain_seconds: float) -> None:
        """Stop pulling; give held tasks ``drain_seconds``; return the rest to the queue."""
        self._stopping.set()
        if self._loop_task is not None:
            await self._loop_task
        if self.psub is not None:
            # Nothing more is pulled.  Left subscribed, the pull inbox would hold up the connection's
            # drain at close until nats-py's drain timeout (30 s), past the pod's grace period.
            try:
                await self.psub.unsubscribe()
            except NatsError:
                pass  # not connected: the server drops the interest with the connection
            self.psub = None
        if self._inflight:
            done, pending = await asyncio.wait(list(self._inflight), timeout=max(0.0, drain_seconds))
            for task in pending:
                msg = self._inflight.get(task)
                task.cancel()
                if msg is not None:
                    try:
                        await msg.nak()  # redelivered now, to another worker
                    except NatsError:
                        pass  # not connected: the ack wait redelivers it
            if pending:
                await asyncio.wait(pending)
        if self._session is not None:
            await self._session.close()

    # -- one task ------------------------------------------------------------------------------------------

    async def _handle(self, msg: Any) -> None:
        deliveries = int(msg.metadata.num_delivered)
        try:
            message = TaskMessage.decode(msg.data)
        except (ValueError, KeyError, TypeError):
            log.error("dropping an unreadable task message on %s", self.queue.subject)
            await msg.term()
            return
        try:
            await self._run_task(msg, message, deliveries)
        except BrokerUnavailable:
            pass  # not acknowledged: redelivered after the ack wait
        except NatsError as exc:
            log.warning("task %s: broker error %s; it will be redelivered", message.task_id, exc)

    async def _run_task(self, msg: Any, message: TaskMessage, deliveries: int) -> None:
        revision: Optional[int]
        if deliveries == 1:
            # First delivery: nobody else ran it, so there is no record yet (or, from an API of an
            # earlier version, its PENDING record at the revision the message carries).
            record, revision = self._record_for(message), message.revision
        else:
            current = await self.broker.get(message.task_id)
            record, revision = current if current else (self._record_for(message), None)
            if record.final:
                await self._duplicate(msg)
                return
        if deliveries > self.queue.max_deliveries:
            last = record.traceback or "no answer: the worker running the task stopped or overran the ack wait"
            await self._finish(msg, record, revision, "FAILURE", None, None,
                               f"failed after {self.queue.max_deliveries} deliveries: {last}", deliveries)
            return
        self.metrics.queued(self.queue.model, max(0.0, time.time() - message.enqueued_at))
        began = time.monotonic()
        # STARTED is written by a timer, only for a call still running after STARTED_AFTER_SECONDS: a
        # fast task costs no write, no extra task and no wait besides its call.
        loop = asyncio.get_running_loop()
        marking: list[asyncio.Task[Optional[tuple[TaskRecord, Optional[int]]]]] = []
        timer = loop.call_later(STARTED_AFTER_SECONDS, lambda: marking.append(
            loop.create_task(self._mark_started(record, revision, deliveries))))
        try:
            status_code, result, error = await self._call(message)
        except BaseException:  # cancelled (the drain ran out) or failed: nothing more is written for it
            for task in marking:
                task.cancel()
            raise
        finally:
            timer.cancel()
        if marking:
            marked = await marking[0]
            if marked is None:  # another delivery answered meanwhile: that answer stands
                await self._duplicate(msg)
                return
            record, revision = marked
        self.metrics.running(self.queue.model, time.monotonic() - began)
        if error is None:
            await self._finish(msg, record, revision, "SUCCESS", result, status_code, None, deliveries)
        elif (status_code in FINAL_CLIENT_ERRORS) or deliveries >= self.queue.max_deliveries:
            await self._finish(msg, record, revision, "FAILURE", result, status_code, error, deliveries)
        else:
            self.metrics.outcome(self.queue.model, "retried")
            await msg.nak(delay=min(RETRY_DELAY_SECONDS * deliveries, MAX_RETRY_DELAY_SECONDS))

    async def _mark_started(self, record: TaskRecord, revision: Optional[int],
                            deliveries: int) -> Optional[tuple[TaskRecord, Optional[int]]]:
        """Write ``STARTED`` (compare-and-set): the record and revision to finish from, ``None`` if the
        task is already final."""
        started = record.started(deliveries)
        new_revision = await self.broker.write(started, revision)
        if new_revision is not None:
            return started, new_revision
        current = await self.broker.get(record.task_id)  # someone else wrote meanwhile: re-read
        if current is None:
            return record, None
        if current[0].final:
            return None
        return current

    async def _duplicate(self, msg: Any) -> None:
        self.metrics.outcome(self.queue.model, "duplicate")
        await msg.ack()

    def _record_for(self, message: TaskMessage) -> TaskRecord:
        """The ``PENDING`` record a task without one has, from its message (the first write creates it)."""
        return message.pending(self.queue.account_id, self.queue.result_ttl_seconds)

    async def _call(self, message: TaskMessage) -> tuple[Optional[int], Any, Optional[str]]:
        """``(status code, JSON answer, error text or None)`` of one call to the model."""
        try:
            async with self.session().post(self.backend + self.predict_route,
                                           data=orjson.dumps(message.request_body())) as response:
                status, data = response.status, await response.read()
        except asyncio.TimeoutError:
            return None, None, f"the model did not answer within {self.queue.task_timeout_seconds} s"
        except aiohttp.ClientError as exc:
            return None, None, f"cannot reach the model: {type(exc).__name__}: {exc}"
        try:
            body: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            body = data.decode("utf-8", "replace")
        if status >= 400:
            text = body if isinstance(body, str) else orjson.dumps(body).decode()
            return status, None, f"the model answered {status}: {text[:MAX_ERROR_CHARS]}"
        return status, body, None

    async def _finish(self, msg: Any, record: TaskRecord, revision: Optional[int], status: str, result: Any,
                      status_code: Optional[int], error: Optional[str], deliveries: int) -> None:
        """Write the final state unless one is already there, acknowledge, then call back once."""
        final = record.finished(status, result=result, status_code=status_code, traceback=error,  # type: ignore[arg-type]
                                deliveries=deliveries)
        wrote = False
        while True:
            new_revision = await self.broker.write(final, revision)
            if new_revision is not None:
                wrote = True
                break
            current = await self.broker.get(record.task_id)
            if current is None:
                revision = None
                continue
            if current[0].final:
                break  # another delivery answered first: that answer stands
            revision = current[1]
        await msg.ack()  # after the write; not confirmed (see the module doc)
        self.metrics.outcome(self.queue.model, status.lower() if wrote else "duplicate")
        if wrote and final.callback_url:
            await self._callback(final)

    async def _callback(self, record: TaskRecord) -> None:
        """POST the final state to the task's ``callback_url`` (once; a failing receiver is logged)."""
        try:
            async with self.session().post(record.callback_url or "", data=orjson.dumps(record.public()),
                                           timeout=aiohttp.ClientTimeout(total=10.0)) as response:
                await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("callback for task %s failed: %s", record.task_id, type(exc).__name__)
