"""The JetStream client the API and the forwarders share (nats-py, public API only).

:class:`TaskBroker` connects in the background and keeps reconnecting, so a
process starts while NATS is down and answers "unavailable" (the API: 503)
instead of failing; once connected it makes sure the stream, the model's
consumers and the results bucket exist exactly as :func:`plan.nats.task_layout`
describes them (idempotent: every API replica and forwarder does it, whoever
comes first creates them).  It offers the few operations tasks need:
publish a task with a JetStream acknowledgement, read a task's state (its
record, else its queued message), write a record with compare-and-set, and
read a consumer's pending count.

Credentials come from ``SGP_INFRA_NATS_*`` (:mod:`.auth`).  A server that
refuses them (or asks for credentials none were given for) is retried like an
outage, since its auth config may be fixed while this process runs, but not
silently: the first refusal of each streak is logged as an error naming the URL
and the variables (never their values), and :attr:`TaskBroker.auth_error`
carries it to the API's 503 answers and the forwarder's ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Mapping, Optional

import nats
from nats.errors import AuthorizationError
from nats.errors import Error as NatsError
from nats.js import api as js_api
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from ..plan.nats import ModelQueue, TaskLayout
from .auth import PASSWORD_VAR, TOKEN_VAR, USER_VAR, auth_vars, nats_auth
from .records import MSG_ID_HEADER, TaskMessage, TaskRecord

#: Default result retention for a queued task whose model left the catalogue (the record's default).
DEFAULT_RESULT_TTL_SECONDS = 86400

log = logging.getLogger("sgp_infra.tasks")

#: Seconds a publish or KV write waits for JetStream's acknowledgement before the caller gets "unavailable".
REQUEST_TIMEOUT_SECONDS = 5.0
#: JetStream drops a second publish with the same task id within this window.
DUPLICATE_WINDOW_SECONDS = 120.0


class BrokerUnavailable(Exception):
    """NATS is not connected, or JetStream did not acknowledge in time: nothing was stored."""


def is_auth_refusal(exc: BaseException) -> bool:
    """The server refused the connection's credentials (or wanted some): ``-ERR 'Authorization Violation'``.

    nats-py raises :class:`~nats.errors.AuthorizationError` when a connected
    client is refused, but a plain :class:`~nats.errors.Error` with the
    server's text while it connects.
    """
    return isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower()


class TaskBroker:
    """One process's connection to the stack's JetStream objects."""

    def __init__(self, url: str, layout: TaskLayout, *, name: str = "sgp-infra",
                 queues: Optional[list[str]] = None, auth: Optional[Mapping[str, str]] = None) -> None:
        """``queues``: the models whose consumers this process ensures (default: all of the layout's).

        ``auth``: ``nats.connect`` credentials (``token``, or ``user`` and
        ``password``); default from ``SGP_INFRA_NATS_*``
        (:class:`~sgp_infra.tasks.auth.NatsAuthInvalid` if they do not make one set).
        """
        self.auth = dict(nats_auth() if auth is None else auth)
        #: Why the server refused this process's credentials, while it does (``None``: no refusal).
        self.auth_error: Optional[str] = None
        self.url = url
        self.layout = layout
        self.name = name
        self.queues = list(layout.queues) if queues is None else queues
        self.nc: Any = None
        self.js: Any = None
        self.kv: Any = None
        self._ready = asyncio.Event()
        self._task: Optional[asyncio.Task[None]] = None
        self._closing = False
        self._on_ready: list[Callable[[], Awaitable[None]]] = []

    # -- life --------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected, and the JetStream objects exist."""
        return self._ready.is_set() and self.nc is not None and self.nc.is_connected

    def on_ready(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` after each (re)connection once the objects are ensured (subscriptions…)."""
        self._on_ready.append(callback)

    async def start(self) -> None:
        """Connect in the background; returns at once (see :meth:`wait_ready`)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sgp-infra-nats-connect")

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return self.ready

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # already closed or disconnected: nothing left to flush
                await self.nc.close()
        self._ready.clear()

    async def _run(self) -> None:
        async def reconnected() -> None:
            self.auth_error = None
            # A broker restarted from its file store still has everything; one that lost its store
            # (a new dev server) needs the objects again.
            asyncio.create_task(self._ensure_loop())

        async def disconnected() -> None:
            if not self._closing:
                log.warning("nats disconnected", extra={"url": self.url})

        async def error(exc: Exception) -> None:
            if is_auth_refusal(exc):
                self._auth_refused(exc)
            else:
                log.debug("nats: %s", exc)

        # max_reconnect_attempts=-1: the first connection and every reconnection are retried forever.
        self.nc = await nats.connect(
            self.url, name=self.name, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2,
            allow_reconnect=True, reconnected_cb=reconnected, disconnected_cb=disconnected, error_cb=error,
            **self.auth,
        )
        self.auth_error = None
        self.js = self.nc.jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
        await self._ensure_loop()

    async def _ensure_loop(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                await self.ensure()
                for callback in self._on_ready:
                    await callback()
                self._ready.set()
                return
            except (NatsError, asyncio.TimeoutError, OSError) as exc:
                self._ready.clear()
                log.warning("jetstream not ready (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- the objects ----------------------------------------------------------------------------------

    def stream_config(self) -> js_api.StreamConfig:
        lay = self.layout
        return js_api.StreamConfig(
            name=lay.stream, subjects=list(lay.stream_subjects), retention=js_api.RetentionPolicy.WORK_QUEUE,
            storage=js_api.StorageType.FILE, num_replicas=lay.replicas, duplicate_window=DUPLICATE_WINDOW_SECONDS,
            # A task nobody pulled within the longest result retention is dropped with it.
            max_age=float(lay.bucket_ttl_seconds), discard=js_api.DiscardPolicy.OLD,
        )

    @staticmethod
    def consumer_config(queue: ModelQueue) -> js_api.ConsumerConfig:
        return js_api.ConsumerConfig(
            durable_name=queue.consumer,
            ack_policy=js_api.AckPolicy.EXPLICIT, deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=float(queue.ack_wait_seconds), max_deliver=queue.max_deliver,
            max_ack_pending=queue.max_ack_pending, max_waiting=512, filter_subject=queue.filter_subject,
        )

    async def ensure(self) -> None:
        """Create (or bring up to date) the stream, this process's consumers and the bucket."""
        js = self.js
        config = self.stream_config()
        try:
            await js.add_stream(config)
        except BadRequestError:  # exists with another configuration (a model or TTL changed)
            await js.update_stream(config)
        for model in self.queues:
            queue = self.layout.queues[model]
            await js.add_consumer(self.layout.stream, self.consumer_config(queue))
        try:
            self.kv = await js.create_key_value(
                bucket=self.layout.bucket, ttl=float(self.layout.bucket_ttl_seconds), history=1,
                replicas=self.layout.replicas, storage=js_api.StorageType.FILE,
                description="sgp-infra ASYNC task records and results")
        except BadRequestError:  # exists with another TTL: keep it, move its TTL
            self.kv = await js.key_value(self.layout.bucket)
            info = await js.stream_info(f"KV_{self.layout.bucket}")
            await js.update_stream(info.config.evolve(max_age=float(self.layout.bucket_ttl_seconds)))

    def _require(self) -> None:
        if not self.ready:
            reason = "; it refused this service's NATS credentials" if self.auth_error else ""
            raise BrokerUnavailable(f"the task broker (NATS JetStream) is not connected{reason}")

    def _auth_refused(self, exc: BaseException) -> None:
        """Record (and log, once per streak of refusals) why the server refused to admit this process."""
        if self.auth:
            message = f"NATS at {self.url} refused the credentials in {auth_vars(self.auth)}: {exc}"
        else:
            message = (f"NATS at {self.url} requires credentials and none are set ({TOKEN_VAR}, or {USER_VAR} "
                       f"and {PASSWORD_VAR}): {exc}")
        if self.auth_error is None:
            log.error("%s; retrying", message)
        self.auth_error = message

    # -- operations ----------------------------------------------------------------------------------

    async def enqueue(self, queue: ModelQueue, message: TaskMessage) -> None:
        """Publish the task on its own subject and wait for JetStream's acknowledgement.

        One round trip: the stored message is the task's ``PENDING`` state
        (:meth:`find` reads it back by id), so no record is written before it.
        Raises :class:`BrokerUnavailable` when it is not acknowledged: the
        caller reports the task as not accepted (a retried publish of the same
        id within :data:`DUPLICATE_WINDOW_SECONDS` is dropped by JetStream).
        """
        self._require()
        try:
            await self.js.publish(queue.task_subject(message.task_id), message.encode(),
                                  timeout=REQUEST_TIMEOUT_SECONDS, stream=self.layout.stream,
                                  headers={MSG_ID_HEADER: message.task_id})
        except (NatsError, asyncio.TimeoutError, OSError) as exc:
            raise BrokerUnavailable(f"the task broker did not acknowledge the task ({type(exc).__name__})") from None

    async def find(self, task_id: str) -> Optional[TaskRecord]:
        """The task's state: its record, else (still queued, never started) ``PENDING`` from its
        message; ``None`` if there is neither.

        The record is read first and, when the message is gone too, once more:
        a forwarder writes the final record before it acknowledges (which
        removes the message), so a task finished between the first two reads
        is found by the third.
        """
        found = await self.get(task_id)
        if found is not None:
            return found[0]
        self._require()
        try:
            raw = await self.js.get_last_msg(self.layout.stream, self.layout.any_task_subject(task_id))
        except NotFoundError:
            found = await self.get(task_id)
            return found[0] if found is not None else None
        except (NatsError, asyncio.TimeoutError, OSError) as exc:
            raise BrokerUnavailable(f"the task broker did not answer ({type(exc).__name__})") from None
        try:
            message = TaskMessage.decode(raw.data or b"")
        except (ValueError, KeyError, TypeError):
            return None
        queue = self.layout.queue(message.model)
        if queue is None:  # the model left the catalogue: only a message carrying its account is visible
            return message.pending("", DEFAULT_RESULT_TTL_SECONDS) if message.account_id else None
        return message.pending(queue.account_id, queue.result_ttl_seconds)

    async def get(self, task_id: str) -> Optional[tuple[TaskRecord, int]]:
        """The record and its revision, or ``None`` if there is none (yet: see :meth:`find`)."""
        self._require()
        try:
            entry = await self.kv.get(task_id)  # bounded by the JetStream context's timeout
        except (KeyNotFoundError, NotFoundError):
            return None
        except (NatsError, asyncio.TimeoutError, OSError) as exc:
            raise BrokerUnavailable(f"the task broker did not answer ({type(exc).__name__})") from None
        if not entry.value:
            return None
        return TaskRecord.decode(entry.value), entry.revision

    async def write(self, record: TaskRecord, revision: Optional[int]) -> Optional[int]:
        """Compare-and-set: write ``record`` if the stored one is still at ``revision`` (``None``: absent).

        Returns the new revision, or ``None`` when another writer got there first.
        """
        try:
            if revision is None:
                return await self.kv.create(record.task_id, record.encode())
            return await self.kv.update(record.task_id, record.encode(), last=revision)
        except KeyWrongLastSequenceError:
            return None
        except BadRequestError as exc:  # "wrong last sequence" on a create of an existing key
            if "wrong last sequence" in str(exc).lower():
                return None
            raise

    async def pending(self, queue: ModelQueue) -> tuple[int, int]:
        """``(waiting, running)``: tasks not yet delivered, and delivered but not acknowledged."""
        self._require()
        info = await self.js.consumer_info(self.layout.stream, queue.consumer)
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)

    def results_subject(self) -> str:
        """The core-NATS subject every record write is published on (``$KV.<bucket>.<task id>``)."""
        return f"$KV.{self.layout.bucket}.>"
