"""A real API server on 127.0.0.1 (ephemeral port) for the API tests and bench."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import uvicorn
import yaml

from sgp_infra.catalog import Catalog, build_catalog, raw_from_stack_doc

ROOT = Path(__file__).resolve().parent.parent

ACME_KEY = "acme-key-0123456789"
OTHER_KEY = "other-key-9876543210"
BOTH_KEY = "both-key-5555555555"
API_KEYS = {
    ACME_KEY: frozenset({"dev-account"}),
    OTHER_KEY: frozenset({"other-account"}),
    BOTH_KEY: frozenset({"dev-account", "other-account"}),
}


def v5_entry(repository: str = "demo-model", account: str | None = None, **infra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model_type": "generic",
        "model_vendor": "launch",
        "vendor_configuration": {
            "model_image": {"registry": "ghcr.io/sgp-infra", "repository": repository, "tag": "0.1.0",
                            "command": ["serve"]},
            "model_infra": {"cpus": 1, "memory": "1Gi", "min_workers": 0, "max_workers": 1, **infra},
        },
    }
    if account:
        entry["account_id"] = account
    return entry


def make_catalog(extra_acme: int = 23, extra_other: int = 3) -> Catalog:
    """The dev stack plus generated v5 models: ``extra_other`` of them in another account."""
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    raw = raw_from_stack_doc(doc)
    models = dict(raw["models"])
    for i in range(extra_acme):
        models[f"gen-{i:04d}"] = v5_entry()
    for i in range(extra_other):
        models[f"other-{i:02d}"] = v5_entry(account="other-account")
    raw["models"] = models
    if extra_other:
        raw["modelGroups"] = {**raw["modelGroups"], "others": {"account_id": "other-account",
                                                               "models": ["other-00"]}}
    return build_catalog(raw)


@contextmanager
def running(app: Any, **settings: Any) -> Iterator[str]:
    """Serve ``app`` with plain uvicorn in a thread, as ``serve`` does (``settings``: more
    ``uvicorn.Config`` settings); yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on",
                            log_level="critical", **settings)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port() -> int:
    """A port nothing listens on now, for a server started as a subprocess."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[str], port: int) -> None:
    """Return once ``serve`` answers /readyz on ``port``; fail if it exits or takes over 30 s."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
        time.sleep(0.1)
