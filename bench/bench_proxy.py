"""Benchmark the API's inference proxy against calling the backend directly and
against nginx as a reverse proxy, all in front of the same demo backend.

    venv/bin/python bench/bench_proxy.py [--seconds 5] [--generator auto|wrk|aiohttp]

Starts, on loopback ports: a demo model (``python -m sgp_infra demo-model``);
the "bare stack" (``bench/bare_proxy.py``: the smallest honest proxy on the
API's own stack -- a one-route Starlette app on uvicorn with serve's uvicorn
settings, forwarding the body with a pooled aiohttp session and returning the
answer, with no auth, metrics or logging: the floor the API's CPU is compared
with); the API (``python -m sgp_infra serve --status none --backend ...``) three ways:
as shipped (JSON access log on), with ``--no-access-log``, and as two
processes sharing the port with ``--reuse-port`` (two replicas on one
machine: what one more core buys); and, if the ``nginx`` binary exists
(Debian: ``apt-get install -y nginx``), an nginx with a temporary config
proxying to the backend with keep-alive upstream connections.  Each path gets
the same small completion request at concurrency 1 and 64, in one run; the
report gives throughput, p50/p99 latency, the throughput ratio to the direct
path and the latency each proxy adds, then the two figures the targets are
set on: the API's added p50 at concurrency 1 (target under 1 ms) and its CPU
per proxied request at concurrency 64 (target at most 150 µs), set beside
the bare stack's CPU per request in the same run: the ratio API/bare, and
what the target leaves above that floor for everything the API adds.

The load generator is ``wrk`` (Debian: ``apt-get install -y wrk``) when it is
installed, driven for ``--seconds`` per path and concurrency after a one-second
warm-up, with a Lua script that POSTs the JSON body and prints its counts.
Why wrk: a Python load generator shares the same cores and caps the *direct*
path, so the ratios would compare the proxies with the load generator rather
than with the backend.  wrk costs a small fraction of a core.  Without wrk the
script falls back to an aiohttp client (``--generator aiohttp`` forces it)
and says so in the report.

Everything still shares the machine's cores, so compare ratios, not absolute
numbers.  All traffic is to 127.0.0.1 and every run is bounded in time.

CPU per request: wall-clock throughput on a shared two-core machine moves by
±30% with whatever else runs, but the CPU time a process spends per request
hardly does.  So for each row the script reads the user + system CPU time of
the process under test (and of its child processes: nginx's worker) from
``/proc/<pid>/stat`` right before and right after the measured run, and
divides by the requests completed: ``proxy CPU µs/req`` is the API process
(or nginx; for ``direct`` it is the backend itself), ``backend CPU µs/req`` is
the demo backend behind it.  That figure is what sizes API replicas: a core
serves about ``1e6 / proxy-µs`` requests per second.  (Clock-tick resolution is
10 ms, a fraction of a percent over a 5-second row.)

``--paths`` runs only some of the paths (``direct`` is always included, as the
baseline; ``bare`` is the bare stack), for quicker iterations while working on
one of them.
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
#: The report's row for ``bench/bare_proxy.py``.
BARE = "bare stack (Starlette + uvicorn + aiohttp)"
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


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"prompt": "hello bench"}'
wrk.headers["content-type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"status_errors": %d, "socket_errors": %d}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> Optional[list[str]]:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces), or ``None``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live child processes (nginx's worker).

    Fields after the command name: state is index 0, ppid 1, utime 11, stime 12.
    Threads are included: the kernel sums them into the process's own line.
    """
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != pid:
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(pid):
                pids.append(int(entry.name))
    total = 0
    for p in pids:
        fields = _stat_fields(p)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


class CpuMeter:
    """CPU seconds spent by the proxy under test and by the backend during one measured run."""

    def __init__(self, proxy_pids: list[int], backend_pid: int):
        self.proxy_pids = proxy_pids
        self.backend_pid = backend_pid
        self._start = (0.0, 0.0)

    def _now(self) -> tuple[float, float]:
        return sum(cpu_seconds(p) for p in self.proxy_pids), cpu_seconds(self.backend_pid)

    def start(self) -> None:
        self._start = self._now()

    def stop(self, requests: int) -> dict[str, float]:
        """µs of CPU per completed request: ``proxy_us`` (the backend itself for direct), ``backend_us``."""
        proxy, backend = self._now()
        n = max(requests, 1)
        backend_us = (backend - self._start[1]) / n * 1e6
        proxy_us = (proxy - self._start[0]) / n * 1e6 if self.proxy_pids else backend_us
        return {"proxy_us": proxy_us, "backend_us": backend_us}


def drive_wrk(wrk: str, script: Path, url: str, headers: dict[str, str], concurrency: int,
              seconds: float, meter: CpuMeter) -> dict[str, float]:
    """One bounded wrk run (after a one-second warm-up on the same connections count)."""
    import json

    base = [wrk, "-t1", f"-c{concurrency}", "-s", str(script), "--timeout", "10s"]
    for key, value in headers.items():
        base += ["-H", f"{key}: {value}"]
    subprocess.run([*base, "-d1s", url], check=True, capture_output=True, timeout=30)
    meter.start()
    out = subprocess.run([*base, f"-d{seconds:g}s", url], check=True, capture_output=True, text=True,
                         timeout=seconds + 30).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    r = json.loads(line[len("WRKJSON "):])
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50": r["p50_us"] / 1000,
            "p99": r["p99_us"] / 1000, "errors": r["status_errors"] + r["socket_errors"],
            **meter.stop(r["requests"])}


async def drive(url: str, headers: dict[str, str], concurrency: int, seconds: float,
                meter: CpuMeter) -> dict[str, float]:
    """The fallback generator: aiohttp, in this process, for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        # warm-up: open the connections
        await asyncio.gather(*(session.post(url, data=b'{"prompt": "warm"}') for _ in range(concurrency)))
        stop = time.perf_counter() + seconds
        meter.start()

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
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
        cpu = meter.stop(len(latencies))
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000, "errors": errors, **cpu}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per path and concurrency")
    parser.add_argument("--generator", choices=("auto", "wrk", "aiohttp"), default="auto",
                        help="load generator (default: wrk if installed, else aiohttp)")
    parser.add_argument("--paths", default="all",
                        help="comma-separated subset of: bare, api, api-quiet, api-2, nginx (direct "
                             "always runs; default all)")
    parser.add_argument("--concurrency", default="1,64", help="comma-separated concurrency levels (default 1,64)")
    args = parser.parse_args(argv)
    every = {"bare", "api", "api-quiet", "api-2", "nginx"}
    wanted = every if args.paths == "all" else set(args.paths.split(","))
    if not wanted <= every:
        parser.error("--paths takes " + ", ".join(sorted(every)))
    levels = [int(c) for c in args.concurrency.split(",")]
    if not 0 < args.seconds <= 120:
        parser.error("--seconds must be in (0, 120]")
    wrk = shutil.which("wrk") if args.generator != "aiohttp" else None
    if args.generator == "wrk" and wrk is None:
        parser.error("wrk is not installed (Debian: apt-get install -y wrk)")
    if wrk is None and args.generator == "auto":
        print("wrk not found (apt-get install -y wrk); falling back to the aiohttp load generator, which "
              "shares the cores and caps the direct path", file=sys.stderr)
    py = sys.executable
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="sgp-bench-"))
    try:
        backend_port, nginx_port = free_port(), free_port()
        env = {**os.environ, "SGP_INFRA_API_KEYS": f'{{"{KEY}": ["{ACCOUNT}"]}}'}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env, "cwd": ROOT}
        procs.append(subprocess.Popen([py, "-m", "sgp_infra", "demo-model", "--port", str(backend_port)], **quiet))
        wait_up(f"http://127.0.0.1:{backend_port}/readyz", procs[0])
        backend_pid = procs[0].pid
        stack = stack_file(tmp)
        completions = "/v4/models/echo/completions"
        paths: dict[str, tuple[str, dict[str, str], list[int]]] = {
            "direct": (f"http://127.0.0.1:{backend_port}/predict", {}, [])}
        if "bare" in wanted:
            port = free_port()
            procs.append(subprocess.Popen([py, str(ROOT / "bench" / "bare_proxy.py"), "--port", str(port),
                                           "--backend", f"http://127.0.0.1:{backend_port}/predict"], **quiet))
            wait_up(f"http://127.0.0.1:{port}/healthz", procs[-1])
            paths[BARE] = (f"http://127.0.0.1:{port}{completions}", {}, [procs[-1].pid])
        # (path key, row name, extra serve flags, processes sharing the port)
        apis = (("api", "api proxy", [], 1),
                ("api-quiet", "api proxy, no access log", ["--no-access-log"], 1),
                ("api-2", "api proxy, 2 processes (--reuse-port)", ["--reuse-port"], 2))
        for key, name, extra, count in apis:
            if key not in wanted:
                continue
            port = free_port()
            started = []
            for _ in range(count):
                proc = subprocess.Popen([py, "-m", "sgp_infra", "serve", "--config-file", str(stack),
                                         "--port", str(port), "--status", "none", "--log-level", "error",
                                         "--backend", f"echo=http://127.0.0.1:{backend_port}", *extra], **quiet)
                procs.append(proc)
                started.append(proc)
                wait_up(f"http://127.0.0.1:{port}/healthz", proc)
            paths[name] = (f"http://127.0.0.1:{port}{completions}", {"x-api-key": KEY}, [p.pid for p in started])
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if nginx and "nginx" in wanted:
            conf = tmp / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=tmp, backend=backend_port, port=nginx_port))
            procs.append(subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"], **quiet))
            wait_up(f"http://127.0.0.1:{nginx_port}/readyz", procs[-1])
            paths["nginx"] = (f"http://127.0.0.1:{nginx_port}/predict", {}, [procs[-1].pid])
        elif "nginx" in wanted:
            print("nginx not found (apt-get install -y nginx); skipping the nginx path", file=sys.stderr)
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT)
        results: dict[tuple[str, int], dict[str, Any]] = {}
        for concurrency in levels:
            for name, (url, headers, pids) in paths.items():
                meter = CpuMeter(pids, backend_pid)
                if wrk:
                    results[(name, concurrency)] = drive_wrk(wrk, script, url, headers, concurrency, args.seconds,
                                                             meter)
                else:
                    results[(name, concurrency)] = asyncio.run(drive(url, headers, concurrency, args.seconds,
                                                                     meter))
        print(f"load generator: {'wrk' if wrk else 'aiohttp (in-process Python)'}, {args.seconds:g} s per row, "
              f"{os.cpu_count()} cores shared by everything")
        print(report(results, list(paths), levels))
        print(targets(results, levels))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(results: dict[tuple[str, int], dict[str, Any]], names: list[str], levels: list[int]) -> str:
    lines = ["| path | concurrency | req/s | p50 ms | p99 ms | throughput vs direct | added p50 ms | added p99 ms "
             "| proxy CPU µs/req | backend CPU µs/req | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for concurrency in levels:
        direct = results[("direct", concurrency)]
        for name in names:
            r = results[(name, concurrency)]
            lines.append(f"| {name} | {concurrency} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                         f"{r['rps'] / direct['rps']:.2f} | {r['p50'] - direct['p50']:+.2f} | "
                         f"{r['p99'] - direct['p99']:+.2f} | {r['proxy_us']:.0f} | {r['backend_us']:.0f} | "
                         f"{r['errors']} |")
    return "\n".join(lines)


def targets(results: dict[tuple[str, int], dict[str, Any]], levels: list[int]) -> str:
    """The API's figures against the issue's targets (as shipped: the ``api proxy`` row), and the CPU
    target set against the bare stack's floor at concurrency 64 when both rows ran."""
    lines = []
    if ("api proxy", 1) in results:
        added = results[("api proxy", 1)]["p50"] - results[("direct", 1)]["p50"]
        lines.append(f"added p50 at concurrency 1: {added:.2f} ms (target < 1 ms)")
    api = results.get(("api proxy", 64))
    bare = results.get((BARE, 64))
    if api is not None:
        lines.append(f"API CPU per proxied request at concurrency 64: {api['proxy_us']:.0f} µs (target <= 150 µs)")
    if bare is not None:
        lines.append(f"bare stack CPU per proxied request at concurrency 64: {bare['proxy_us']:.0f} µs "
                     "(Starlette + uvicorn + aiohttp, no sgp-infra code)")
    if api is not None and bare is not None and bare["proxy_us"] > 0:
        floor, own = bare["proxy_us"], api["proxy_us"] - bare["proxy_us"]
        lines.append(f"API / bare stack: {api['proxy_us'] / floor:.2f} (the API adds {own:.0f} µs per request "
                     "above the floor: its routes, guards, metrics and access line, and the library work they cause)")
        if floor >= 150:
            lines.append(f"the 150 µs target is {150 / floor:.2f} of the bare stack's floor: not reachable on "
                         "this stack, whatever the API adds")
        else:
            lines.append(f"the 150 µs target leaves {150 - floor:.0f} µs per request above the floor for "
                         f"everything the API adds (it adds {own:.0f})")
    return "\n".join(lines)

if __name__ == "__main__":
    sys.exit(main())
