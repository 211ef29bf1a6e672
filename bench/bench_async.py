"""Benchmark ASYNC tasks (JetStream + one forwarder) against the same backend called synchronously.

    venv/bin/python bench/bench_async.py [--tasks 2000] [--concurrency 1,64]

Starts on loopback: the demo backend (``python -m sgp_infra demo-model``) and
``serve`` on a two-model stack, ``echo`` (SYNC, v4 completions) and
``echo-async`` (ASYNC, the same backend), with ``--backend`` for both, so
``serve`` also starts a local nats-server (JetStream, file storage) and one
forwarder process for ``echo-async``.  Then, in one run, for each
concurrency:

* **sync**: ``POST /v4/models/echo/completions`` through the API;
* **async**: ``POST /v1/async-tasks`` then ``GET /v1/async-tasks/{id}?wait=30``
  until ``SUCCESS`` (the GET holds until the answer is written, so no polling
  interval is added).

With ``--cpu`` (Linux), it also prints the CPU milliseconds each process
(the API, nats-server, the forwarder, the backend, and this benchmark's own
client, which shares the cores) spent per call, and their
read/write system calls per call, read from ``/proc``: where a path's cost
goes (on loopback each write also costs the kernel the receiving side).

It prints tasks (or calls) per second and p50/p99 of the time from the first
request to the answer, the throughput ratio async/sync and the latency async
adds at p50.  Targets: async >= 0.5 of sync throughput at concurrency 64, and
< 5 ms added p50 at concurrency 1.  Not a test: nothing here asserts timing;
everything shares the machine's cores, so compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789"
ACCOUNT = "bench"
PROMPT = {"prompt": "hello from the async benchmark"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_file(directory: Path, per_worker: int) -> Path:
    image = {"registry": "local", "repository": "demo", "tag": "1", "command": ["demo"]}
    doc = {"config": {
        "sgp-infra:accountId": ACCOUNT, "sgp-infra:namespace": "bench",
        "sgp-infra:templates": {"echo": {
            "endpoint_type": "SYNC", "model_type": "COMPLETION", "endpoint_protocol": "SGP",
            "vendor_configuration": {"vendor": "LAUNCH", "bundle_config": {
                "registry": "local", "image": "demo", "tag": "1", "command": ["demo"]},
                "endpoint_config": {"min_workers": 1, "max_workers": 4, "per_worker": 32}}}},
        "sgp-infra:models": {
            "echo": {"model_type": "COMPLETION", "model_template_id": "echo"},
            "echo-async": {"model_type": "generic", "model_vendor": "launch", "vendor_configuration": {
                "model_image": image,
                "model_infra": {"endpoint_type": "async", "min_workers": 1, "max_workers": 1,
                                "per_worker": per_worker}},
                "async_tasks": {"task_timeout_seconds": 60, "result_ttl_seconds": 3600}}},
    }}
    path = directory / "Pulumi.bench-async.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def wait_up(url: str, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def sync_call(session: aiohttp.ClientSession, base: str) -> None:
    async with session.post(f"{base}/v4/models/echo/completions", json=PROMPT) as r:
        assert r.status == 200, await r.text()
        await r.read()


async def async_call(session: aiohttp.ClientSession, base: str) -> None:
    async with session.post(f"{base}/v1/async-tasks", params={"model_endpoint_id": "echo-async"},
                            json={"args": PROMPT}) as r:
        assert r.status == 200, await r.text()
        task_id = (await r.json())["task_id"]
    while True:
        async with session.get(f"{base}/v1/async-tasks/{task_id}", params={"wait": "30"}) as r:
            body: dict[str, Any] = await r.json()
        if body["status"] == "SUCCESS":
            return
        assert body["status"] != "FAILURE", body


async def run_load(base: str, kind: str, total: int, concurrency: int) -> tuple[float, list[float]]:
    """``(per second, latencies in seconds)`` of ``total`` calls, ``concurrency`` at a time."""
    call = sync_call if kind == "sync" else async_call
    latencies: list[float] = []
    left = total
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(headers={"x-api-key": KEY}, connector=connector) as session:
        for _ in range(min(20, total)):  # warm-up: connections, JIT-free but cache-warm
            await call(session, base)

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                started = time.perf_counter()
                await call(session, base)
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, latencies


def process_tree(root: int) -> dict[int, str]:
    """``{pid: short name}`` of ``root`` and its descendants (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in cmd if w]
        fallback = Path(words[0]).name if words else "?"
        name = next((w for w in ("forwarder", "demo-model", "serve") if w in words), fallback)
        found[pid] = "nats-server" if "nats-server" in name else name
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: dict[int, str]) -> dict[str, float]:
    """CPU seconds (user + system) so far, per process name."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid, name in pids.items():
        try:
            fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def syscalls(pids: dict[int, str]) -> dict[str, tuple[int, int]]:
    """``(read, write)`` system calls so far, per process name (``/proc/PID/io``): each loopback
    write also costs the kernel the receiver's side, so fewer, larger writes is cheaper."""
    out: dict[str, tuple[int, int]] = {}
    for pid, name in pids.items():
        try:
            fields = dict(line.split(": ", 1) for line in (Path("/proc") / str(pid) / "io").read_text().splitlines())
        except (OSError, ValueError):
            continue
        reads, writes = out.get(name, (0, 0))
        out[name] = (reads + int(fields["syscr"]), writes + int(fields["syscw"]))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="calls per path and concurrency (default 2000)")
    parser.add_argument("--concurrency", default="1,64", help="comma-separated concurrencies (default 1,64)")
    parser.add_argument("--cpu", action="store_true", help="print CPU ms per call of each process (Linux)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    py = sys.executable
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="sgp-bench-async-"))
    try:
        backend_port, api_port = free_port(), free_port()
        env = {**os.environ, "SGP_INFRA_API_KEYS": f'{{"{KEY}": ["{ACCOUNT}"]}}'}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env, "cwd": ROOT}
        procs.append(subprocess.Popen([py, "-m", "sgp_infra", "demo-model", "--port", str(backend_port)], **quiet))
        wait_up(f"http://127.0.0.1:{backend_port}/readyz", procs[0])
        backend = f"http://127.0.0.1:{backend_port}"
        stack = stack_file(tmp, per_worker=max(levels))
        # serve starts the local nats-server and the forwarder itself (and stops them on SIGTERM).
        procs.append(subprocess.Popen(
            [py, "-m", "sgp_infra", "serve", "--config-file", str(stack), "--port", str(api_port), "--status",
             "none", "--log-level", "error", "--no-access-log", "--nats-store", str(tmp / "nats"),
             "--backend", f"echo={backend}", "--backend", f"echo-async={backend}"], **quiet))
        base = f"http://127.0.0.1:{api_port}"
        wait_up(f"{base}/readyz", procs[1])
        results: dict[tuple[str, int], tuple[float, list[float]]] = {}
        cpu: dict[tuple[str, int], dict[str, float]] = {}
        calls: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
        for concurrency in levels:
            for kind in ("sync", "async"):
                pids = {pid: name for proc in procs for pid, name in process_tree(proc.pid).items()} \
                    if args.cpu else {}
                before, sys_before = cpu_seconds(pids), syscalls(pids)
                client_before = time.process_time()
                results[(kind, concurrency)] = asyncio.run(run_load(base, kind, args.tasks, concurrency))
                client = time.process_time() - client_before
                after, sys_after = cpu_seconds(pids), syscalls(pids)
                cpu[(kind, concurrency)] = {n: (after[n] - before.get(n, 0.0)) * 1000 / args.tasks for n in after}
                if args.cpu:
                    # The load generator shares the cores too; an ASYNC task is two of its requests.
                    cpu[(kind, concurrency)]["client"] = client * 1000 / args.tasks
                calls[(kind, concurrency)] = {
                    n: tuple((a - b) / args.tasks for a, b in zip(sys_after[n], sys_before.get(n, (0, 0)), strict=True))
                    for n in sys_after}  # type: ignore[misc]
        print(f"{'path':<6} {'conc':>4} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for (kind, concurrency), (rate, lat) in results.items():
            print(f"{kind:<6} {concurrency:>4} {rate:>9.0f} {pct(lat, 0.5):>8.2f} {pct(lat, 0.99):>8.2f}")
        if args.cpu:
            print("\nCPU ms per call (the warm-up calls included):")
            for (kind, concurrency), per in cpu.items():
                print(f"{kind:<6} {concurrency:>4} " + "  ".join(f"{n} {v:.2f}" for n, v in sorted(per.items()))
                      + f"  total {sum(per.values()):.2f}")
            print("\nsystem calls per call, read/write (the warm-up calls included):")
            for (kind, concurrency), counts in calls.items():
                print(f"{kind:<6} {concurrency:>4} " + "  ".join(
                    f"{n} {r:.1f}/{w:.1f}" for n, (r, w) in sorted(counts.items())))
        print()
        for concurrency in levels:
            s_rate, s_lat = results[("sync", concurrency)]
            a_rate, a_lat = results[("async", concurrency)]
            print(f"concurrency {concurrency}: async/sync throughput {a_rate / s_rate:.2f}, "
                  f"async adds {pct(a_lat, 0.5) - pct(s_lat, 0.5):.2f} ms at p50 "
                  f"(targets: >= 0.5 at 64, < 5 ms at 1)")
        print(f"(p50 sync / async at concurrency {levels[0]}: "
              f"{statistics.median(results[('sync', levels[0])][1]) * 1000:.2f} / "
              f"{statistics.median(results[('async', levels[0])][1]) * 1000:.2f} ms)")
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
