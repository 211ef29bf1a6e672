"""Scale from zero: hold requests while a model with no ready pods wakes up.

A held request already counts in the in-flight gauge, which is what the KEDA
trigger reads, so holding it *is* the wake-up signal.  One poll task per model
(shared by every waiter) checks readiness until the model is up or its
cold-start budget is spent.  A waiter waits at most its hold (the model's
``cold_start_hold_seconds``, 50 s by default: below the official clients' 60 s
timeout) and then gets a 503 with ``Retry-After``; the poll goes on without it,
for the whole budget, so the client's own retry joins the same wake-up and
lands on a warm model.

Readiness has two sources, either is enough:

* the API's status source (``ModelStatus``): ``ready`` with at least one
  ready replica (a ``ready`` status with no replicas and a reason, e.g.
  "scaled to zero", is *not* ready; a bare ``ready``, as the static source
  reports, is);
* a direct probe of the model's healthcheck route through its Service, which
  answers as soon as a pod is ready, without waiting for the next status
  refresh.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Awaitable, Callable, Optional, Protocol

from ..status import ModelStatus

Probe = Callable[[], Awaitable[bool]]


class ReadinessSource(Protocol):
    """What the waker needs from the status source."""

    def get(self, object_name: str) -> ModelStatus: ...


def status_ready(status: ModelStatus) -> bool:
    return status.status == "ready" and (status.ready_replicas > 0 or status.reason is None)


class Waker:
    def __init__(self, poll_interval: float = 0.5, fresh_for: float = 15.0):
        self.poll_interval = poll_interval
        self.fresh_for = fresh_for
        self._tasks: dict[str, asyncio.Task[bool]] = {}
        self._ok_until: dict[str, float] = {}

    def mark_ok(self, key: str) -> None:
        """The model just answered: it is up, whatever the status cache says."""
        self._ok_until[key] = time.monotonic() + self.fresh_for

    def mark_down(self, key: str) -> None:
        self._ok_until.pop(key, None)

    def recently_ok(self, key: str) -> bool:
        until = self._ok_until.get(key)
        return until is not None and until > time.monotonic()

    def polling(self, key: str) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done()

    async def wait(self, key: str, ready_now: Callable[[], bool], probe: Probe, hold: float, budget: float,
                   on_start: Optional[Callable[[], None]] = None) -> Optional[bool]:
        """Wait for the model's wake-up, at most ``hold`` seconds.

        ``True``: the model is ready; ``False``: the wake-up spent its
        ``budget`` without the model becoming ready; ``None``: the hold ended
        first (the wake-up goes on).  A wake-up already under way is joined;
        otherwise one starts, polling for at most ``budget`` seconds.
        """
        task = self._tasks.get(key)
        if task is None or task.done():
            task = asyncio.ensure_future(self._poll(key, ready_now, probe, budget))
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
            if on_start is not None:
                on_start()
        try:
            # shield: a waiter that gives up (hold over, client gone) leaves the poll running.
            return await asyncio.wait_for(asyncio.shield(task), hold)
        except asyncio.TimeoutError:
            return None

    def _forget(self, key: str, task: asyncio.Task[bool]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failed poll is "not ready", never an unhandled error

    async def _poll(self, key: str, ready_now: Callable[[], bool], probe: Probe, budget: float) -> bool:
        deadline = time.monotonic() + budget
        while True:
            if ready_now() or await self._probe(probe):
                self.mark_ok(key)
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(self.poll_interval, left))

    @staticmethod
    async def _probe(probe: Probe) -> bool:
        try:
            return await probe()
        except Exception:  # noqa: BLE001 - a failing probe just means "not yet"
            return False

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._tasks.clear()
