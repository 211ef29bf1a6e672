"""Benchmark: ``GET /v5/models?limit=100`` on a 1,000-model catalogue vs a bare handler.

Not a test (nothing here asserts timing).  Run from the repository root:

    venv/bin/python bench/bench_api.py                  # 10 s per endpoint, 16 connections
    venv/bin/python bench/bench_api.py --seconds 5 --connections 8

One uvicorn server (a subprocess, one worker) serves the real app for a
generated 1,000-model catalogue, plus ``/bench/bare``: a handler on the same
app and middleware that returns precomputed bytes of exactly the size of the
real response.  A small asyncio load generator (raw HTTP/1.1 keep-alive
sockets, so the client is cheap next to the server) alternates rounds of the
two endpoints and reports requests per second, p50 and p99, and the ratio
real / bare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
REAL = "/v5/models?limit=100"
BARE = "/bench/bare"


def build_app():  # type: ignore[no-untyped-def]
    import httpx
    from starlette.responses import Response

    sys.path.insert(0, str(ROOT / "tests"))
    from api_helpers import make_catalog, running  # noqa: E402

    from sgp_infra.api import create_app

    catalog = make_catalog(extra_acme=997, extra_other=0)  # + the dev stack's 3 = 1,000 models
    app = create_app(catalog, api_keys={KEY: frozenset({"dev-account"})}, include_inference=False)
    with running(app) as url:  # the real answer's bytes, from a real server
        body = httpx.get(url + REAL, headers={"x-api-key": KEY}).content
    assert len(catalog.models) == 1000

    @app.get(BARE, include_in_schema=False)
    async def bare() -> Response:
        return Response(body, media_type="application/json")

    return app, len(body)


def serve(port: int) -> None:
    import uvicorn

    from sgp_infra.api.connections import guarded_http
    from sgp_infra.catalog.settings import ApiLimits

    app, size = build_app()
    print(f"ready {size}", flush=True)
    # As ``serve`` runs it: uvicorn's httptools protocol inside the connection guard.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                http=guarded_http(ApiLimits()))


async def _worker(port: int, path: str, until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {KEY}\r\n\r\n").encode()
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:100])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


async def measure(port: int, path: str, seconds: float, connections: int) -> tuple[float, float, float]:
    latencies: list[float] = []
    start = time.perf_counter()
    await asyncio.gather(*(_worker(port, path, start + seconds, latencies) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, q[49] * 1000, q[98] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint, split over --rounds")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, env=env,
                              text=True)
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        size = int(line.split()[1])
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        results: dict[str, list[tuple[float, float, float]]] = {REAL: [], BARE: []}
        per = args.seconds / args.rounds
        asyncio.run(measure(port, REAL, 1.0, args.connections))  # warm-up
        for _ in range(args.rounds):
            for path in (REAL, BARE):
                results[path].append(asyncio.run(measure(port, path, per, args.connections)))
    finally:
        server.terminate()
        server.wait(timeout=10)

    def best(path: str) -> tuple[float, float, float]:
        return max(results[path])

    real, bare = best(REAL), best(BARE)
    print(f"1,000-model catalogue, response {size:,} bytes, {args.connections} connections, one uvicorn worker")
    print(f"{'endpoint':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, (rps, p50, p99) in ((f"GET {REAL}", real), (f"GET {BARE} (same bytes)", bare)):
        print(f"{name:32} {rps:8.0f} {p50:8.2f} {p99:8.2f}")
    print(f"ratio real/bare: {real[0] / bare[0]:.2f} (target >= 0.80)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
