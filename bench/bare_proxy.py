"""The smallest honest proxy on the API's own stack: the "bare stack" row of ``bench_proxy.py``.

    venv/bin/python bench/bare_proxy.py --port 8001 --backend http://127.0.0.1:8000/predict

Why it exists: the API's CPU per proxied request is only meaningful next to
what the same libraries cost with no sgp-infra code at all.  This is that
floor, measured in the same run: a Starlette app on uvicorn, started with the
settings ``serve`` gives uvicorn (uvloop and httptools when installed, no
access log, no ``X-Forwarded-*`` rewriting, no ``server`` header, the same
keep-alive timeout and garbage-collector thresholds), whose one POST route
reads the body, forwards it with a pooled keep-alive ``aiohttp.ClientSession``
(decompression off, as the API's) to ``--backend`` and returns the answer's
bytes, status and content type.  No auth, admission, metrics, logging,
connection limits or translation: everything the API adds on top is the
difference between the two rows.

``GET /healthz`` answers 200 so the benchmark can wait for it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
from typing import AsyncIterator, Optional

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def build_app(backend: str) -> Starlette:
    """The bare proxy: every POST goes to ``backend`` (one URL) through one pooled session."""
    session: Optional[aiohttp.ClientSession] = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        # As the API's upstream session: pooled, kept alive 4 s idle, no decompression, no cookies.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024, keepalive_timeout=4.0), auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=None))
        try:
            yield
        finally:
            await session.close()

    async def forward(request: Request) -> Response:
        assert session is not None
        body = await request.body()
        async with session.post(backend, data=body, headers={"content-type": "application/json"},
                                allow_redirects=False) as answer:
            data = await answer.read()
            return Response(data, status_code=answer.status,
                            media_type=answer.headers.get("content-type", "application/json"))

    async def healthz(request: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"]),
                             Route("/{path:path}", forward, methods=["POST"])],
                     lifespan=lifespan)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True, help="the URL every POST is forwarded to")
    args = parser.parse_args(argv)
    app = build_app(args.backend)
    # serve's garbage-collector settings (sgp_infra.cli.serving.tune_gc), so only the code differs.
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(7000, gen1, gen2)
    # serve's uvicorn settings, less its connection guard (sgp-infra code): loop "auto" picks uvloop.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None, access_log=False,
                            log_level="error", lifespan="on", ws="none", http="httptools",
                            timeout_keep_alive=75, proxy_headers=False, server_header=False)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
