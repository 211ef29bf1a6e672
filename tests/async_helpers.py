"""Real NATS, a scriptable model backend and forwarder processes on 127.0.0.1, for the ASYNC tests.

The backend answers ``POST /predict`` with ``{"echo": <args.echo>}`` after
``args.sleep`` seconds, or with ``args.fail`` as its status code; it counts the
calls per ``echo`` value so tests can tell how often a task ran.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sgp_infra.catalog import Catalog, build_catalog
from sgp_infra.tasks.local import forwarder_command

DEV_KEY = "acme-key-0123456789"
OTHER_KEY = "other-key-9876543210"
API_KEYS = {DEV_KEY: frozenset({"dev-account"}), OTHER_KEY: frozenset({"other-account"})}


def async_raw(*, per_worker: int = 4, max_deliveries: int = 3, task_timeout: int = 30,
              namespace: str = "sgp-test") -> dict[str, Any]:
    """A catalogue with one ASYNC v5 model ``jobs`` (account dev-account) and one SYNC model."""
    def v5(endpoint_type: str, **infra: Any) -> dict[str, Any]:
        return {"model_type": "generic", "model_vendor": "launch", "vendor_configuration": {
            "model_image": {"registry": "ghcr.io/sgp-infra", "repository": "demo-model", "tag": "0.1.0",
                            "command": ["serve"], "predict_route": "/predict", "healthcheck_route": "/readyz"},
            "model_infra": {"cpus": 1, "memory": "1Gi", "min_workers": 0, "max_workers": 2,
                            "per_worker": per_worker, "endpoint_type": endpoint_type, **infra}}}
    jobs = v5("async")
    jobs["async_tasks"] = {"task_timeout_seconds": task_timeout, "max_deliveries": max_deliveries,
                           "result_ttl_seconds": 3600}
    return {"accountId": "dev-account", "namespace": namespace, "models": {"jobs": jobs, "sync-model": v5("sync")}}


def async_catalog(**kw: Any) -> Catalog:
    return build_catalog(async_raw(**kw))


def write_stack(tmp: Path, raw: dict[str, Any]) -> Path:
    path = tmp / "Pulumi.async-test.yaml"
    path.write_text(yaml.safe_dump({"config": {f"sgp-infra:{k}": v for k, v in raw.items()}}))
    return path


class Backend:
    """The scriptable model server (see module doc), served by uvicorn in a thread."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.url = ""
        self._server: Optional[uvicorn.Server] = None
        self._thread: Optional[threading.Thread] = None

    async def predict(self, request: Request) -> Response:
        args = await request.json()
        key = str(args.get("echo"))
        with self._lock:
            self.calls[key] += 1
        if args.get("sleep"):
            await asyncio.sleep(float(args["sleep"]))
        if args.get("fail"):
            return JSONResponse({"error": f"failing on purpose for {key}"}, status_code=int(args["fail"]))
        return JSONResponse({"echo": args.get("echo")})

    async def ready(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def start(self) -> Backend:
        app = Starlette(routes=[Route("/predict", self.predict, methods=["POST"]), Route("/readyz", self.ready)])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False,
                                log_level="critical", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "test backend did not start"
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self._server.servers[0].sockets[0].getsockname()[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


@contextmanager
def forwarders(stack: Path, backend: str, nats_url: str, count: int = 1,
               model: str = "jobs") -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` forwarder processes, killed at the end whatever happened."""
    procs = [start_forwarder(stack, backend, nats_url, model) for _ in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)  # waits, and closes the stderr pipe


def start_forwarder(stack: Path, backend: str, nats_url: str, model: str = "jobs",
                    drain_seconds: float = 5.0) -> subprocess.Popen[bytes]:
    cmd = forwarder_command(["--config-file", str(stack)], model, backend, nats_url)
    cmd += ["--drain-seconds", str(drain_seconds)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def poll_until_final(client: httpx.Client, task_id: str, key: str = DEV_KEY, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/async-tasks/{task_id}", params={"wait": 5}, headers={"x-api-key": key})
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in ("SUCCESS", "FAILURE"):
            return body
        assert time.monotonic() < deadline, f"task {task_id} still {body['status']} after {timeout} s"


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def jsz(monitor_url: str) -> dict[str, Any]:
    """The server's JetStream report with every stream and consumer."""
    return httpx.get(f"{monitor_url}/jsz", params={"streams": "true", "consumers": "true", "config": "true"},
                     timeout=5).json()


def python() -> str:
    return sys.executable
