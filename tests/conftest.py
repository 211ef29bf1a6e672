"""Suite-wide fixtures."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from mock_helpers import Recorder, set_mocks

#: Fixtures shared by several test modules (``program_run``: the whole program under mocks).
pytest_plugins = ["program_helpers"]


class MainLoop:
    """The main thread's event loop for Pulumi's mocks, and the loops Pulumi makes in its worker threads.

    Pulumi's mock monitor (``pulumi.runtime.mocks.MockMonitor.RegisterResource``)
    runs in the loop's default executor and calls ``asyncio.new_event_loop()``
    there for every worker thread that has no loop (``pulumi.runtime.sync_await``),
    and never closes it: when the executor's threads end, each such loop and
    its self-pipe socket pair were reported as unclosed (a ResourceWarning)
    during whichever test the garbage collector ran in.  So the loop's default
    executor gives each worker thread a loop of ours up front (Pulumi then uses
    it), and :meth:`close` closes them all once the threads have ended.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread_loops: list[asyncio.AbstractEventLoop] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(thread_name_prefix="main-loop-executor",
                                            initializer=self._give_thread_a_loop)
        loop.set_default_executor(self._executor)

    def _give_thread_a_loop(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        with self._lock:
            self._thread_loops.append(loop)

    def close(self) -> None:
        """Close the loop, end its worker threads, then close the loops they had."""
        if not self.loop.is_closed():
            self.loop.close()
        self._executor.shutdown(wait=True)
        for loop in self._thread_loops:
            loop.close()
        self._thread_loops.clear()


#: The main thread's loop at the last test's start (``asyncio.run`` unsets it without closing it).
_made: list[MainLoop] = []


@pytest.fixture(autouse=True)
def main_thread_event_loop() -> Iterator[None]:
    """Give every test a current event loop on the main thread.

    Pulumi's mocks (``@pulumi.runtime.test``) look the loop up with
    ``asyncio.get_event_loop()``; a test that calls ``asyncio.run`` leaves the
    main thread without one, which used to make later Pulumi tests fail
    depending on the order tests ran in.  The loop made for an earlier test is
    closed before a new one replaces it: left open, its self-pipe sockets were
    reported as unclosed (a ResourceWarning, an error in this suite).
    """
    try:
        with warnings.catch_warnings():
            # 3.12+ warn (and would make a loop) when there is none: make it here instead, on every version.
            warnings.simplefilter("error", DeprecationWarning)
            loop = asyncio.get_event_loop_policy().get_event_loop()
    except (RuntimeError, DeprecationWarning):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    if not (_made and _made[0].loop is loop):
        for old in _made:
            if not old.loop.is_running():
                old.close()
        _made[:] = [MainLoop(loop)]
    yield


@pytest.fixture(autouse=True, scope="session")
def close_the_last_main_loop() -> Iterator[None]:
    """Close the last test's main-thread loop (and its worker threads' loops) when the session ends."""
    yield
    for made in _made:
        made.close()
    _made.clear()


@pytest.fixture(autouse=True)
def unfreeze_heap() -> Iterator[None]:
    """Undo ``gc.freeze()`` after each test.

    The Pulumi program and the ``render``/``validate`` commands freeze the
    heap once their catalogue is planned (``sgp_infra/heap.py``); that is right
    for a one-shot process, but the test process runs them hundreds of times.
    """
    yield
    gc.unfreeze()


@pytest.fixture
def recorder() -> Recorder:
    """Pulumi mocks that record what a program registers (a test file may define its own)."""
    rec = Recorder()
    set_mocks(rec, preview=False)
    return rec
