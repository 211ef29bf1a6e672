"""Benchmark the API's inference proxy against calling the backend directly and
against nginx as a reverse proxy, all in front of the same demo backend.

    .venv/bin/python bench/bench_proxy.py [--requests-1 1000] [--requests-64 5000]

Starts, on loopback ports: a demo model (``python -m sgp_infra demo-model``),
the API (``python -m sgp_infra serve --status none --backend ...``) and, if the
``nginx`` binary exists (Debian: ``apt-get install -y nginx``), an nginx with
a temporary config proxying to the backend with keep-alive upstream
connections.  Each path is driven with aiohttp at concurrency 1 and 64 with
the same small completion request; the report gives throughput, p50/p99
latency, the throughput ratio to the direct path and the latency each proxy
adds.  Everything (load generator included) shares the machine's cores, so
compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789"
ACCOUNT = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_file(directory: Path) -> Path:
    """A one-model stack: an SGP echo model with room for 64 concurrent requests."""
    doc = {"config": {
        "sgp-infra:accountId": ACCOUNT, "sgp-infra:namespace": "bench",
        "sgp-infra:templates": {"echo": {
            "endpoint_type": "SYNC", "model_type": "COMPLETION", "endpoint_protocol": "SGP",
            "vendor_configuration": {"vendor": "LAUNCH", "bundle_config": {
                "registry": "local", "image": "demo", "tag": "1", "command": ["demo"]},
                "endpoint_config": {"min_workers": 1, "max_workers": 4, "per_worker": 32}}}},
        "sgp-infra:models": {"echo": {"model_type": "COMPLETION", "model_template_id": "echo"}},
    }}
    path = directory / "Pulumi.bench.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a server exited early while waiting for {url}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


async def drive(url: str, headers: dict[str, str], concurrency: int, requests: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        # warm-up: open the connections
        await asyncio.gather(*(session.post(url, data=b'{"prompt": "warm"}') for _ in range(concurrency)))

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(url, data=b'{"prompt": "hello bench"}',
                                        headers={"content-type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000, "errors": errors}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests-1", type=int, default=1000, help="requests at concurrency 1")
    parser.add_argument("--requests-64", type=int, default=5000, help="requests at concurrency 64")
    args = parser.parse_args(argv)
    py = sys.executable
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="sgp-bench-"))
    try:
        backend_port, api_port, nginx_port = free_port(), free_port(), free_port()
        env = {**os.environ, "SGP_INFRA_API_KEYS": f'{{"{KEY}": ["{ACCOUNT}"]}}'}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env, "cwd": ROOT}
        procs.append(subprocess.Popen([py, "-m", "sgp_infra", "demo-model", "--port", str(backend_port)], **quiet))
        procs.append(subprocess.Popen([py, "-m", "sgp_infra", "serve", "--config-file", str(stack_file(tmp)),
                                       "--port", str(api_port), "--status", "none", "--log-level", "error",
                                       "--backend", f"echo=http://127.0.0.1:{backend_port}"], **quiet))
        wait_up(f"http://127.0.0.1:{backend_port}/readyz", procs[0])
        wait_up(f"http://127.0.0.1:{api_port}/healthz", procs[1])
        paths: dict[str, tuple[str, dict[str, str]]] = {
            "direct": (f"http://127.0.0.1:{backend_port}/predict", {}),
            "api proxy": (f"http://127.0.0.1:{api_port}/v4/models/echo/completions", {"x-api-key": KEY}),
        }
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if nginx:
            conf = tmp / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=tmp, backend=backend_port, port=nginx_port))
            procs.append(subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"], **quiet))
            wait_up(f"http://127.0.0.1:{nginx_port}/readyz", procs[-1])
            paths["nginx"] = (f"http://127.0.0.1:{nginx_port}/predict", {})
        else:
            print("nginx not found (apt-get install -y nginx); skipping the nginx path", file=sys.stderr)
        results: dict[tuple[str, int], dict[str, Any]] = {}
        for concurrency, n in ((1, args.requests_1), (64, args.requests_64)):
            for name, (url, headers) in paths.items():
                results[(name, concurrency)] = asyncio.run(drive(url, headers, concurrency, n))
        print(report(results, list(paths)))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(results: dict[tuple[str, int], dict[str, Any]], names: list[str]) -> str:
    lines = ["| path | concurrency | req/s | p50 ms | p99 ms | throughput vs direct | added p50 ms | added p99 ms | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for concurrency in (1, 64):
        direct = results[("direct", concurrency)]
        for name in names:
            r = results[(name, concurrency)]
            lines.append(f"| {name} | {concurrency} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                         f"{r['rps'] / direct['rps']:.2f} | {r['p50'] - direct['p50']:+.2f} | "
                         f"{r['p99'] - direct['p99']:+.2f} | {r['errors']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
