"""The API's side of ASYNC tasks: enqueue, read, and wait for a result.

One :class:`TaskService` per app (``app.state.tasks``), started and stopped
with the app.  It owns the broker connection, a waiter table fed by one
core-NATS subscription on the results bucket's subject (every record write is
published there, so a waiting call wakes as soon as its task is answered,
without polling; the last writes it saw, and the tasks it queued itself, also
answer a ``?wait`` read without a bucket read), and the queue-depth gauges,
refreshed in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

import orjson
from nats.errors import Error as NatsError
from prometheus_client import CollectorRegistry

from ...catalog import Catalog, Model
from ...plan.nats import TaskLayout, task_layout
from ...tasks.broker import BrokerUnavailable, TaskBroker
from ...tasks.metrics import QueueDepth
from ...tasks.records import TaskMessage, TaskRecord
from ..errors import ApiError

log = logging.getLogger("sgp_infra.api.tasks")

#: Seconds between reads of every ASYNC model's consumer for the queue-depth gauges.
DEPTH_REFRESH_SECONDS = 5.0
#: Latest record writes kept (raw) from the results subscription, and tasks this process queued (their
#: PENDING record), so a ``?wait`` read needs no bucket read.
RECENT_RECORDS = 20_000


@dataclass(frozen=True)
class TaskOutcome:
    """What :meth:`TaskService.enqueue_and_wait` found when it stopped waiting.

    ``done``: the task is SUCCESS or FAILURE and ``record`` holds its answer;
    otherwise it is still queued or running and the caller can poll
    ``GET /v1/async-tasks/{task_id}``.
    """

    task_id: str
    record: Optional[TaskRecord]

    @property
    def done(self) -> bool:
        return self.record is not None and self.record.final

    @property
    def status(self) -> str:
        return self.record.status if self.record is not None else "PENDING"


def new_task_id() -> str:
    """A random UUID (122 bits from the OS's CSPRNG): task ids cannot be guessed."""
    return str(uuid.uuid4())


def is_task_id(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


class TaskService:
    """Tasks for one catalogue, over one NATS connection."""

    def __init__(self, catalog: Catalog, nats_url: str, registry: Optional[CollectorRegistry] = None) -> None:
        self.catalog = catalog
        self.layout: TaskLayout = task_layout(catalog)
        self.broker = TaskBroker(nats_url, self.layout, name="sgp-infra-api")
        self.broker.on_ready(self._subscribe_results)
        self.depth = QueueDepth(registry) if registry is not None else None
        self._waiters: dict[str, list[asyncio.Future[TaskRecord]]] = {}
        #: task id -> the raw record of the last write this process saw on the results subject, or the
        #: PENDING record of a task it queued and has seen no write of yet (oldest first).
        self._recent: dict[str, bytes] = {}
        self._results_sub: Any = None
        self._depth_task: Optional[asyncio.Task[None]] = None
        #: The event loop the service runs on (set by :meth:`start`).
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    # -- life --------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.broker.start()
        if self.depth is not None and self.layout.queues:
            self._depth_task = asyncio.create_task(self._refresh_depth())

    async def stop(self) -> None:
        if self._depth_task is not None:
            self._depth_task.cancel()
            try:
                await self._depth_task
            except (asyncio.CancelledError, Exception):
                pass
        await self.broker.close()
        self._results_sub = None

    async def _subscribe_results(self) -> None:
        # Writes made while disconnected were not delivered: what was seen before may be stale.
        self._recent.clear()
        # Core subscriptions are restored by the client after a reconnect: subscribe once.
        if self._results_sub is None:
            self._results_sub = await self.broker.nc.subscribe(self.broker.results_subject(), cb=self._on_record)

    async def _on_record(self, msg: Any) -> None:
        task_id = msg.subject.rsplit(".", 1)[-1]
        self._remember(task_id, msg.data)
        waiters = self._waiters.get(task_id)
        if not waiters or not msg.data:
            return
        try:
            record = TaskRecord.decode(msg.data)
        except (ValueError, KeyError, TypeError):
            return
        if record.final:
            for future in self._waiters.pop(task_id, []):
                if not future.done():
                    future.set_result(record)

    def _remember(self, task_id: str, raw: bytes) -> None:
        """Keep ``raw`` as the task's latest record (empty: a deletion, forget it), newest last."""
        recent = self._recent
        recent.pop(task_id, None)  # re-inserted last: the dict stays in order of the latest writes
        if raw:
            recent[task_id] = raw
            if len(recent) > RECENT_RECORDS:
                del recent[next(iter(recent))]

    async def _refresh_depth(self) -> None:
        assert self.depth is not None
        while True:
            if self.broker.ready:
                for queue in self.layout.queues.values():
                    try:
                        waiting, running = await self.broker.pending(queue)
                    except (BrokerUnavailable, NatsError, asyncio.TimeoutError):
                        break
                    self.depth.set(queue.model, waiting, running)
            await asyncio.sleep(DEPTH_REFRESH_SECONDS)

    # -- operations ----------------------------------------------------------------------------------

    async def enqueue(self, model: Model, args: Any = None, url: Optional[str] = None,
                      callback_url: Optional[str] = None, task_id: Optional[str] = None) -> str:
        """Queue one task for ``model``; its id once JetStream has it.  503 ``ApiError`` if the broker cannot."""
        queue = self.layout.queue(model.name)
        if queue is None:
            raise ApiError(400, f"model '{model.name}' is a {model.endpoint_type} endpoint, not ASYNC; "
                                "call its inference route instead")
        task_id = task_id or new_task_id()
        message = TaskMessage(task_id=task_id, model=model.name, enqueued_at=time.time(), args=args, url=url,
                              callback_url=callback_url, account_id=model.account_id)
        try:
            await self.broker.enqueue(queue, message)
        except BrokerUnavailable as exc:
            raise ApiError(503, f"the task queue is unavailable, the task was not accepted; retry later ({exc})",
                           retry_after_seconds=1) from None
        if task_id not in self._recent:  # a write of the record may already have been seen: it is newer
            self._remember(task_id, message.pending(model.account_id, queue.result_ttl_seconds).encode())
        return task_id

    async def get(self, task_id: str) -> Optional[TaskRecord]:
        """The task's record (``PENDING`` while it is queued), ``None`` if unknown or past its retention;
        503 ``ApiError`` if the broker is down."""
        try:
            found = await self.broker.find(task_id)
        except BrokerUnavailable as exc:
            raise ApiError(503, f"the task queue is unavailable; retry later ({exc})", retry_after_seconds=1) \
                from None
        if found is None or found.expired():
            return None
        return found

    async def read(self, task_id: str, wait: float = 0.0,
                   visible: Callable[[TaskRecord], bool] = lambda record: True) -> Optional[TaskRecord]:
        """The record (``None`` if unknown or expired); with ``wait``, held until it is final, at most
        ``wait`` seconds, if ``visible`` (the caller may see it).

        The waiter is registered before the one read, so an answer written in between is either read
        or delivered: at most one round trip to the bucket, however long the wait.  That read is the
        last write of the record this process saw on the results subject when there is one (every
        write is published there, in order, and a later one will wake the waiter), or the PENDING
        record of a task this process queued; else the bucket (and the queue).
        """
        if wait <= 0:
            return await self.get(task_id)
        future: asyncio.Future[TaskRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(future)
        try:
            current = self._seen(task_id)
            if current is None:
                current = await self.get(task_id)
            if current is None or current.final or not visible(current):
                return current
            try:
                return await asyncio.wait_for(future, wait)
            except asyncio.TimeoutError:
                return await self.get(task_id)
        finally:
            self._forget(task_id, future)

    def _seen(self, task_id: str) -> Optional[TaskRecord]:
        """The last write of the record seen on the results subject, if any (and the broker is connected)."""
        raw = self._recent.get(task_id)
        if raw is None or not self.broker.ready:
            return None
        try:
            record = TaskRecord.decode(raw)
        except (ValueError, KeyError, TypeError):
            return None
        return None if record.expired() else record

    def _forget(self, task_id: str, future: asyncio.Future[TaskRecord]) -> None:
        waiters = self._waiters.get(task_id)
        if waiters is not None:
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(task_id, None)

    async def enqueue_and_wait(self, model: Model, args_bytes: bytes, timeout: float) -> TaskOutcome:
        """Queue the task (``args_bytes``: the JSON body for the model's predict route) and wait up to ``timeout``."""
        try:
            args = orjson.loads(args_bytes) if args_bytes else {}
        except orjson.JSONDecodeError:
            raise ApiError(400, "the request body is not JSON") from None
        task_id = new_task_id()
        # Registered before the publish, so even an instant answer is not missed.
        future: asyncio.Future[TaskRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(future)
        try:
            await self.enqueue(model, args=args, task_id=task_id)
            try:
                return TaskOutcome(task_id, await asyncio.wait_for(future, max(0.0, timeout)))
            except asyncio.TimeoutError:
                return TaskOutcome(task_id, await self.get(task_id))
        finally:
            self._waiters.pop(task_id, None)
