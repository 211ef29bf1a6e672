"""Shared test helpers: a Pulumi mock that records what a program registers, and strict CRD schemas."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import pulumi


class Recorder(pulumi.runtime.Mocks):
    """Pulumi mocks that keep each registered resource's type and inputs by name."""

    def __init__(self) -> None:
        self.registered: dict[str, tuple[str, dict[str, Any]]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[Optional[str], dict[str, Any]]:
        self.registered[args.name] = (args.typ, dict(args.inputs))
        return f"{args.name}-id", args.inputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def strict_schema(schema: Any) -> Any:
    """Forbid fields a structural CRD schema does not declare (the API server would prune them)."""
    if isinstance(schema, dict):
        out = {k: strict_schema(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict_schema(v) for v in schema]
    return schema


def set_mocks(mocks: pulumi.runtime.Mocks, **kwargs: Any) -> None:
    """``pulumi.runtime.set_mocks``, then let the root stack's registration it starts finish.

    ``set_mocks`` registers the root Stack at once, as tasks on the main
    thread's event loop that only a ``@pulumi.runtime.test`` run drives.  A
    test that calls the config API directly never runs the loop, so those
    tasks were destroyed pending later, during whatever test ran then: an
    unawaited-coroutine warning, which this suite makes an error (a flaky one,
    since it came with garbage collection).
    """
    pulumi.runtime.set_mocks(mocks, **kwargs)
    loop = asyncio.get_event_loop_policy().get_event_loop()
    pending = asyncio.all_tasks(loop)
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=10))


#: How resource inputs mark a secret on the wire between a Pulumi program and the engine (and so
#: as mocks receive them): ``{SECRET_SIG_KEY: SECRET_SIG, "value": ...}``.  Constants of the
#: engine's resource-monitor protocol, spelled out here rather than read from the SDK's private names.
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def is_secret(value: Any) -> bool:
    """Whether ``value``, a resource input as mocks receive it, is marked secret."""
    return isinstance(value, dict) and value.get(SECRET_SIG_KEY) == SECRET_SIG
