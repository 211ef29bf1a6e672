"""The whole Pulumi program (``__main__.py``) run under mocks, with what it sent the engine kept.

For the tests that check where a secret goes: every registered resource,
every registered output and the log.
"""

from __future__ import annotations

import runpy
from typing import Any, Iterator

import pulumi
import pytest

from mock_helpers import set_mocks
from plan_fixtures import ROOT
from test_components import Recorder, RecordingMonitor, engine_config


class OutputsMonitor(RecordingMonitor):
    """Also keeps every component's and the stack's registered outputs, as sent to the engine."""

    outputs: list[str]

    def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        self.outputs.append(str(request.outputs))
        return super().RegisterResourceOutputs(request)


@pytest.fixture
def program_run() -> Iterator[tuple[Recorder, OutputsMonitor]]:
    mocks = Recorder()
    monitor = OutputsMonitor(mocks)
    monitor.outputs = []
    set_mocks(mocks, project="sgp-infra", stack="test", preview=False, monitor=monitor)
    yield mocks, monitor
    pulumi.runtime.set_all_config({}, [])


def run_main(config: dict[str, Any], secret_keys: list[str]) -> None:
    pulumi.runtime.set_all_config(engine_config(config), secret_keys)

    @pulumi.runtime.test
    def program() -> pulumi.Output[int]:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        return pulumi.Output.from_input(0)

    program()
