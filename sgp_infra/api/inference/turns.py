"""Socket writes of one event-loop turn, made together when the turn ends.

Why: the proxy's CPU per request depends on how its writes are spaced.  A
``write`` to a loopback socket whose reader is asleep pays for waking that
reader (the load generator, the model server), and on a virtual machine a
wake-up costs more than the write itself.  Writes made back to back find the
reader still awake.  The express lane answers most calls from I/O callbacks
(:class:`~.express.Flight`), where each write followed the parsing of one
message, spaced out by it; made at the end of the turn they are bursts
again.  Flights and these writes together measured about 15% less API CPU
per proxied request than a task per call on the benchmark machine
(``docs/inference.md``, Benchmark).

Nothing waits longer than the current turn of the loop: an action added
during a turn runs right after the I/O callbacks of that turn, in the order
the actions were added.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

log = logging.getLogger("sgp_infra.api.inference")

#: Per event loop: the actions waiting for the end of its current turn (an entry exists while some wait).
_due: dict[asyncio.AbstractEventLoop, list[Callable[[], None]]] = {}


def at_end_of_turn(loop: asyncio.AbstractEventLoop, action: Callable[[], None]) -> None:
    """Run ``action`` (a write, typically) when the current turn of ``loop`` ends, after those added before it."""
    actions = _due.get(loop)
    if actions is None:
        actions = _due[loop] = []
        loop.call_soon(_run, loop)
    actions.append(action)


def _run(loop: asyncio.AbstractEventLoop) -> None:
    for action in _due.pop(loop, ()):
        try:
            action()
        except Exception:  # noqa: BLE001 - one connection's failure must not keep the others' writes back
            log.exception("a deferred write failed")
