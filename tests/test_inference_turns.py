"""``sgp_infra.api.inference.turns``: writes deferred to the end of the event loop's turn."""

from __future__ import annotations

import asyncio
import logging

import pytest
import uvloop

from sgp_infra.api.inference.turns import at_end_of_turn


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_actions_run_once_the_turn_ends_in_the_order_added(loop_factory, caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def fails() -> None:
            done.append("fails")
            raise RuntimeError("a broken write")

        def adds_more() -> None:
            done.append("adds more")
            at_end_of_turn(loop, lambda: done.append("next turn"))

        at_end_of_turn(loop, lambda: done.append("first"))
        at_end_of_turn(loop, fails)
        at_end_of_turn(loop, adds_more)
        at_end_of_turn(loop, lambda: done.append("last"))
        done.append("still in the turn")
        assert done == ["still in the turn"]
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop = loop_factory()
    try:
        with caplog.at_level(logging.ERROR, logger="sgp_infra.api.inference"):
            loop.run_until_complete(scenario())
    finally:
        loop.close()
    # one failing action does not keep the others back; one added while they run waits for the next turn
    assert done == ["still in the turn", "first", "fails", "adds more", "last", "next turn"]
    assert [r.message for r in caplog.records] == ["a deferred write failed"]


def test_each_loop_has_its_own_turn() -> None:
    done: list[str] = []

    async def scenario(name: str) -> None:
        at_end_of_turn(asyncio.get_running_loop(), lambda: done.append(name))
        await asyncio.sleep(0)

    for name in ("one", "two"):
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(scenario(name))
        finally:
            loop.close()
    assert done == ["one", "two"]
