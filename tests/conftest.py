"""Suite-wide fixtures."""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Iterator

import pulumi
import pytest

from mock_helpers import Recorder


#: The main thread's loop at the last test's start (``asyncio.run`` unsets it without closing it).
_made: list[asyncio.AbstractEventLoop] = []


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
    for old in _made:
        if old is not loop and not old.is_running() and not old.is_closed():
            old.close()
    _made[:] = [loop]
    yield


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
    pulumi.runtime.set_mocks(rec, preview=False)
    return rec
