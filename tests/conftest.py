"""Suite-wide fixtures."""

from __future__ import annotations

import asyncio
import gc
from typing import Iterator

import pytest


@pytest.fixture(autouse=True)
def main_thread_event_loop() -> Iterator[None]:
    """Give every test a current event loop on the main thread.

    Pulumi's mocks (``@pulumi.runtime.test``) look the loop up with
    ``asyncio.get_event_loop()``; a test that calls ``asyncio.run`` leaves the
    main thread without one, which used to make later Pulumi tests fail
    depending on the order tests ran in.
    """
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
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
