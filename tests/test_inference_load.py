"""A bounded load test: the API and a demo backend as real processes
(``python -m sgp_infra serve`` / ``demo-model``), driven at concurrency 64.

Zero errors, and after the load ends no growth in the API's open sockets or
resident memory between two identical rounds (the first round warms pools and
caches up; the second must not add to them).

Size: two rounds of ``SGP_INFRA_LOAD_REQUESTS`` requests each, 500 by
default (still eight times the concurrency per round), which keeps the whole
suite under about 90 s on the 2-core development machine.  Set
``SGP_INFRA_LOAD_REQUESTS=20000`` for the full run.

Sockets are counted once the server has let go of the closed client
connections (:func:`_sockets_at_most`, polled with a deadline): counting right
after a round raced those closes (17 sockets seen once where 9 remained).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from test_inference_helpers import ACCOUNT, KEY, free_port, make_catalog

REQUESTS = int(os.environ.get("SGP_INFRA_LOAD_REQUESTS", "500"))
#: How long the server may take to close the sockets of connections the client closed.
SETTLE_SECONDS = 15.0
CONCURRENCY = 64
LOAD_MODEL = {"model_type": "COMPLETION", "model_template_id": "sgp-completion", "per_worker": 32, "max_workers": 4}


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    catalog = make_catalog({"load-echo": LOAD_MODEL})
    path = Path(tmp_path_factory.mktemp("stack")) / "Pulumi.load.yaml"
    path.write_text(yaml.safe_dump(catalog.stack_document()))
    backend_port, api_port = free_port(), free_port()
    env = {**os.environ, "SGP_INFRA_API_KEYS": f'{{"{KEY}": ["{ACCOUNT}"]}}'}
    backend = subprocess.Popen([sys.executable, "-m", "sgp_infra", "demo-model", "--port", str(backend_port),
                                "--protocol", "SGP"], stderr=subprocess.PIPE, env=env)
    api = subprocess.Popen([sys.executable, "-m", "sgp_infra", "serve", "--config-file", str(path),
                            "--port", str(api_port), "--status", "none", "--log-level", "warning",
                            "--backend", f"load-echo=http://127.0.0.1:{backend_port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_up(f"http://127.0.0.1:{backend_port}/readyz", backend)
        _wait_up(f"http://127.0.0.1:{api_port}/healthz", api)
        yield f"http://127.0.0.1:{api_port}", api.pid
    finally:
        for proc in (api, backend):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stderr is not None:
                proc.stderr.close()


async def _round(base: str, n: int) -> dict[int, int]:
    codes: dict[int, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, headers={"x-api-key": KEY}, limits=limits, timeout=30) as client:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                try:
                    r = await client.post("/v4/models/load-echo/completions", json={"prompt": f"request {i}"})
                    ok = r.status_code == 200 and r.json()["completions"][0][1] == [f"request {i}"]
                    code = r.status_code if ok else -r.status_code
                except httpx.HTTPError:
                    code = -1
                codes[code] = codes.get(code, 0) + 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return codes


def _sockets(pid: int) -> int:
    """The process's open sockets (a descriptor closed while they are listed is not one)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except FileNotFoundError:
            pass
    return count


def _settled_sockets(pid: int, quiet: float = 0.5) -> int:
    """The API's socket count once it has stopped changing for ``quiet`` seconds (or after SETTLE_SECONDS)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    count, since = _sockets(pid), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.05)
        now = _sockets(pid)
        if now != count:
            count, since = now, time.monotonic()
    return count


def _sockets_at_most(pid: int, bound: int) -> int:
    """The API's socket count as soon as it is at most ``bound``, else the count after SETTLE_SECONDS.

    The client has closed its connections when a round ends, but the server
    closes its side only once it reads the end of each stream, a moment later.
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    count = _sockets(pid)
    while count > bound and time.monotonic() < deadline:
        time.sleep(0.05)
        count = _sockets(pid)
    return count


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _in_flight(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith('sgp_infra_model_requests_in_flight{model="load-echo"}'))
    return float(line.split()[-1])


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to count sockets and memory")
def test_load_zero_errors_and_no_growth(stack: tuple[str, int]) -> None:
    base, pid = stack
    first = asyncio.run(_round(base, REQUESTS))
    assert first == {200: REQUESTS}
    sockets_after_first, rss_after_first = _settled_sockets(pid), _rss_kib(pid)
    second = asyncio.run(_round(base, REQUESTS))
    assert second == {200: REQUESTS}
    sockets_after_second = _sockets_at_most(pid, sockets_after_first + 4)
    rss_after_second = _rss_kib(pid)
    assert _in_flight(base) == 0
    # The pool to the backend is reused, not grown: at most the concurrency's worth of sockets.
    assert sockets_after_second <= sockets_after_first + 4, (sockets_after_first, sockets_after_second)
    assert sockets_after_second <= CONCURRENCY + 16
    # No per-request leak: a second identical round adds (almost) nothing.
    assert rss_after_second - rss_after_first < 16 * 1024, (rss_after_first, rss_after_second)
