"""Scale from zero: hold requests while a model with no ready pods wakes up.

A held request already counts in the in-flight gauge, which is what the KEDA
trigger reads, so holding it *is* the wake-up signal.  Meanwhile one poll task
per model (shared by every waiter) checks readiness until the model is up or
the cold-start budget is spent; waiters that give up (timeout, disconnect) just
stop waiting, and the task stops when nobody waits any more.

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
        self._waiters: dict[str, int] = {}
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

    async def wait(self, key: str, ready_now: Callable[[], bool], probe: Probe, timeout: float,
                   on_start: Optional[Callable[[], None]] = None) -> bool:
        """Wait until the model is ready (``True``) or ``timeout`` passes (``False``)."""
        task = self._tasks.get(key)
        if task is None or task.done():
            task = asyncio.create_task(self._poll(key, ready_now, probe), name=f"wake-{key}")
            self._tasks[key] = task
            if on_start is not None:
                on_start()
        self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            self._waiters[key] -= 1
            if self._waiters[key] == 0 and not task.done():
                task.cancel()

    async def _poll(self, key: str, ready_now: Callable[[], bool], probe: Probe) -> bool:
        while True:
            if ready_now() or await self._probe(probe):
                self.mark_ok(key)
                return True
            await asyncio.sleep(self.poll_interval)

    @staticmethod
    async def _probe(probe: Probe) -> bool:
        try:
            return await probe()
        except Exception:  # noqa: BLE001 - a failing probe just means "not yet"
            return False

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._tasks.clear()
