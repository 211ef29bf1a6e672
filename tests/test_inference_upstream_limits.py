"""A model backend attacking the API, on loopback: every upstream limit holds.

Each attack is a raw TCP backend (``FaultServer``) behind a real API server
(uvicorn in a thread of this process).  For each one: the API answers with its
JSON error shape (502/504, or a bounded 503/429 for ``Retry-After``) in
bounded time; this process's resident memory grows by less than 100 MB; its
open file descriptors come back to their count before the attack; and
``/healthz``, polled all along from another thread, answers within 1 s every time.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from test_inference_helpers import HEADERS, FaultServer, make_app, make_catalog, read_request, serve

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.exclusive,  # /healthz within 1 s under attack: not beside another test worker
              pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc for memory and fds")]

MB = 1024 * 1024
ATTACK = {"model_type": "COMPLETION", "model_template_id": "sgp-completion"}
CATALOG = make_catalog({"attack": ATTACK, "slow": ATTACK}, inference={"slow": {"read_timeout_seconds": 1}})

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]


@functools.cache
def bomb(size: int = 1024 * MB) -> bytes:
    """gzip of ``size`` zero bytes (by default about 1 MiB that decodes to 1 GiB), made a MiB at a time
    (the zeros are never all in memory); built on first use, not at import: it takes seconds."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MB)
    return b"".join(z.compress(zeros) for _ in range(size // MB)) + z.flush()



class Backend:
    """One fault server whose behaviour each test sets."""

    def __init__(self) -> None:
        self.behaviour: Behaviour = _endless_headers

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.behaviour(reader, writer)


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[str, Backend]]:
    backend = Backend()
    with FaultServer(backend) as url:
        app = make_app(CATALOG, {"attack": url, "slow": url})
        with serve(app) as base:
            yield base, backend


# --- the attacks ----------------------------------------------------------------------------------


async def _write_forever(writer: asyncio.StreamWriter, data: bytes, seconds: float = 60, pause: float = 0) -> None:
    """Write ``data`` again and again until the API hangs up (or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        writer.write(data)
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)


async def _endless_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
    n = 0
    while True:
        n += 1
        writer.write(b"x-header-%d: %s\r\n" % (n, b"v" * 1000))
        await writer.drain()


async def _endless_header_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nx-long: ")
    await _write_forever(writer, b"v" * 65536)


async def _many_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"a: b\r\n" * 100_000
                 + b"content-length: 2\r\n\r\n{}")
    await writer.drain()
    await reader.read()


def _gzip_bomb_as(content_type: bytes) -> Behaviour:
    """A backend answering with the gzip bomb as ``content_type`` (JSON, or an event stream)."""
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ncontent-encoding: gzip\r\n"
                     b"content-length: %d\r\n\r\n" % len(bomb()) + bomb())
        await writer.drain()
        await reader.read()
    return behaviour


_gzip_bomb = _gzip_bomb_as(b"application/json")
_gzip_bomb_stream = _gzip_bomb_as(b"text/event-stream")


async def _oversize_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    await _write_forever(writer, b"%x\r\n%s\r\n" % (len(chunk), chunk))


async def _oversize_announced(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (1024 * MB))
    await _write_forever(writer, b"x" * 65536)


async def _slow_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    await _write_forever(writer, b"1\r\n \r\n", pause=0.05)  # no gap is long; the answer never ends


def _busy(status: int, retry_after: bytes) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One answer per connection: a pooled connection must not carry this case's answer into the next.
        await read_request(reader)
        body = b'{"detail": "busy"}'
        writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\nretry-after: %s\r\n"
                     b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (status, retry_after, len(body), body))
        await writer.drain()
        writer.close()
    return behaviour


# --- the bounds ------------------------------------------------------------------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextmanager
def healthz_watch(base: str) -> Iterator[list[float]]:
    """Poll ``/healthz`` from another thread while the body runs; yields the latencies seen."""
    latencies: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=base, timeout=5) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.monotonic() - started if ok else float("inf"))
                stop.wait(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        thread.join(10)


def attack(setup: tuple[str, Backend], behaviour: Behaviour, model: str = "attack", stream: bool = False,
           rounds: int = 2) -> list[httpx.Response]:
    """Run ``rounds`` calls against ``behaviour`` and check every bound; returns the answers."""
    base, backend = setup
    backend.behaviour = behaviour
    with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as warm:  # pools and caches warmed up
        warm.get("/healthz")
    answers: list[httpx.Response] = []
    with healthz_watch(base) as latencies:
        while not latencies:
            time.sleep(0.01)
        fds, rss = open_fds(), rss_mb()
        for _ in range(rounds):
            started = time.monotonic()
            with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as client:
                answers.append(client.post(f"/v4/models/{model}/completions",
                                           json={"prompt": "x", "stream": stream}))
            assert time.monotonic() - started < 20, "the API took too long to give up"
        grown = rss_mb() - rss
        deadline = time.monotonic() + 20
        while open_fds() > fds and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_fds() <= fds, f"descriptors leaked: {fds} before, {open_fds()} after"
    assert grown < 100, f"resident memory grew by {grown:.0f} MB"
    assert latencies and max(latencies) < 1.0, f"/healthz was slow or failed: {max(latencies):.2f} s"
    return answers


def assert_error(r: httpx.Response, status: int, kind_words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and body["error"] and kind_words in body["detail"], body


@pytest.mark.parametrize("behaviour", [_endless_headers, _endless_header_line, _many_headers],
                         ids=["endless-headers", "endless-header-line", "100k-headers"])
def test_response_headers_are_bounded(setup: tuple[str, Backend], behaviour: Behaviour) -> None:
    for r in attack(setup, behaviour):
        assert_error(r, 502, "headers")


def test_a_gzip_bomb_is_stopped_at_the_cap_on_decoded_bytes(setup: tuple[str, Backend]) -> None:
    bomb()  # built before the attack is watched
    for r in attack(setup, _gzip_bomb):
        assert_error(r, 502, "more than 67108864 bytes")


def test_a_gzip_bomb_in_a_stream_ends_it_with_an_error_event(setup: tuple[str, Backend]) -> None:
    bomb()  # built before the attack is watched
    for r in attack(setup, _gzip_bomb_stream, stream=True):
        assert r.status_code == 200
        assert "event: error" in r.text and "larger than" in r.text


@pytest.mark.parametrize("behaviour", [_oversize_body, _oversize_announced], ids=["chunked", "announced"])
def test_an_oversize_body_is_502(setup: tuple[str, Backend], behaviour: Behaviour) -> None:
    for r in attack(setup, behaviour):
        assert_error(r, 502, "bytes")


def test_a_never_ending_slow_body_is_504(setup: tuple[str, Backend]) -> None:
    for r in attack(setup, _slow_body, model="slow"):
        assert_error(r, 504, "did not finish its answer within 1 s")


@pytest.mark.parametrize("status, header, expected", [
    (503, b"99999999999999999999", "300"),
    (503, b"soon, maybe", "5"),
    (503, b"Wed, 21 Oct 2015 07:28:00 GMT", "1"),
    (429, b"Fri, 31 Dec 9999 23:59:59 GMT", "300"),
    (429, b"-1", "5"),
])
def test_a_malformed_or_absurd_retry_after_is_bounded(setup: tuple[str, Backend], status: int, header: bytes,
                                                      expected: str) -> None:
    for r in attack(setup, _busy(status, header), rounds=1):
        assert_error(r, status, "busy")
        assert r.headers["retry-after"] == expected
