"""Suite-wide fixtures."""

from __future__ import annotations

import asyncio
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
