"""The client-facing limits, one regression test per attack class, on loopback.

The attacks run against ``serve`` as a subprocess (so its memory and
descriptors can be read from ``/proc``) with small limits, so each test is
short.  Each asserts the bound loosely: the API's resident memory grows by
less than 100 MB, its open descriptors return to their starting count, and
``/healthz`` answers within 1 s throughout.  The app-level answers (error
shape, redirects, sort keys, nested JSON) run against an in-process server.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import httpx
import pytest

from api_helpers import ACME_KEY, API_KEYS, ROOT, free_port, make_catalog, running, wait_ready
from sgp_infra.api import create_app
from sgp_infra.catalog.settings import ApiLimits

KEY = "limits-key-0123456789"
HEADER_TIMEOUT = 1.0
KEEP_ALIVE = 1
MAX_CONNECTIONS = 60
MAX_BODY = 1024 * 1024
MAX_HEADER_BYTES = 8 * 1024
MAX_HEADERS = 50
MB = 1024 * 1024

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
              pytest.mark.exclusive]  # /healthz within 1 s under attack: not beside another test worker


# --- the server under attack, and the bounds ---------------------------------------------------------


class Api:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    port = free_port()
    env = {**os.environ, "SGP_INFRA_API_KEYS": json.dumps({KEY: ["dev-account"]})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sgp_infra", "serve", "--stack", "dev", "--port", str(port), "--status", "none",
         "--no-access-log", "--header-timeout", str(HEADER_TIMEOUT), "--keep-alive-timeout", str(KEEP_ALIVE),
         "--max-connections", str(MAX_CONNECTIONS), "--max-body-bytes", str(MAX_BODY),
         "--max-header-bytes", str(MAX_HEADER_BYTES), "--max-headers", str(MAX_HEADERS)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:  # stopped even when it does not start in time (it would outlive the suite)
        wait_ready(proc, port)
        yield Api(proc, port)
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert "Traceback" not in err, err[-3000:]


class HealthPoller(threading.Thread):
    """``GET /healthz`` on a fresh connection every 0.2 s; records each answer's status and time."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.answers: list[tuple[float, Any]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                status: Any = httpx.get(f"{self.url}/healthz", timeout=2).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            self.answers.append((time.monotonic() - start, status))
            self.stop.wait(0.2)


@contextmanager
def bounded(api: Api, *, healthz_may_be: tuple[int, ...] = (200,)) -> Iterator[None]:
    """Assert the attack inside kept the API's memory and descriptors bounded and /healthz answering."""
    rss, fds = api.rss(), api.fds()
    poller = HealthPoller(api.url)
    poller.start()
    try:
        yield
    finally:
        poller.stop.set()
        poller.join(5)
    grown = api.rss() - rss
    assert grown < 100 * MB, f"resident memory grew by {grown / MB:.0f} MB"
    deadline = time.monotonic() + 15
    while api.fds() > fds and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.fds() <= fds, f"{api.fds()} descriptors open, {fds} before"
    assert poller.answers, "/healthz was never polled"
    slow = [(t, s) for t, s in poller.answers if t >= 1.0 or s not in healthz_may_be]
    assert not slow, f"/healthz answers over 1 s or unexpected: {slow[:5]} of {len(poller.answers)}"
    assert httpx.get(f"{api.url}/healthz", timeout=2).status_code == 200


# --- a raw HTTP/1.1 client, so each attack sends exactly its bytes ------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def assert_error_shape(status: int, body: bytes) -> dict[str, Any]:
    doc = json.loads(body)
    assert doc["status"] == status and isinstance(doc["error"], str) and isinstance(doc["detail"], str), doc
    return doc


async def one_request(port: int, raw: bytes, *, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await asyncio.wait_for(read_response(reader), timeout)
    finally:
        writer.close()


async def answer_while_sending(port: int, head: bytes, more: Iterable[bytes], *,
                               timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` then each of ``more`` until the server answers, and return that answer.

    The server answers an over-limit request and closes while this client is
    still sending.  On a raw socket a failed send (EPIPE, reset) leaves the
    answer already received readable (Linux returns queued data before the
    error); asyncio streams would abort the transport and drop it, which made
    these tests flaky.
    """
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)

    async def receive() -> tuple[int, dict[str, str], bytes]:
        data = b""
        while True:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                lines = data[:head_end].decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = data[head_end + 4:]
                length = int(headers.get("content-length", "0"))
                if len(body) >= length:
                    return int(lines[0].split()[1]), headers, body[:length]
            try:
                got = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                got = b""
            if not got:
                raise asyncio.IncompleteReadError(data, None)
            data += got

    async def send() -> None:
        try:
            await loop.sock_sendall(sock, head)
            for piece in more:
                await loop.sock_sendall(sock, piece)
        except OSError:
            pass  # the server answered and closed: the answer is read by receive()

    answer = asyncio.ensure_future(receive())
    sender = asyncio.ensure_future(send())
    try:
        return await asyncio.wait_for(answer, timeout)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        sock.close()


# --- 1. many unique long URLs without a key -------------------------------------------------------------------


def test_many_unique_long_urls_without_a_key_are_401_and_nothing_is_kept(api: Api) -> None:
    async def client(n: int, statuses: list[int]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        try:
            for i in range(100):
                path = f"/v4/models/{n}-{i}/completions?q={'x' * 6000}{n}-{i}"
                writer.write(f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{{}}".encode())
                status, _, body = await read_response(reader)
                assert_error_shape(status, body)
                statuses.append(status)
        finally:
            writer.close()

    async def main() -> list[int]:
        statuses: list[int] = []
        await asyncio.gather(*(client(n, statuses) for n in range(30)))
        return statuses

    with bounded(api):
        statuses = asyncio.run(main())
    assert statuses == [401] * 3000


# --- 2. huge bodies without a key ---------------------------------------------------------------------------


def test_huge_bodies_without_a_key_are_401_before_the_body_is_read(api: Api) -> None:
    """100 connections at once each announce 1 GB and send as fast as they can: every one is answered
    401 (or, once answered, closed on it) without the API reading the bodies."""

    async def client(outcomes: list[str]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"POST /v4/models/echo/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000000\r\n\r\n")
        answer = asyncio.ensure_future(read_response(reader))
        chunk = b"x" * 65536
        sent = 0
        try:
            try:
                while not answer.done() and sent < 8 * MB:
                    writer.write(chunk)
                    sent += len(chunk)
                    await asyncio.wait_for(writer.drain(), 5)
            except ConnectionError:
                pass  # the server answered and closed while this client was still sending: read the answer
            status, headers, body = await asyncio.wait_for(answer, 10)
            assert_error_shape(status, body)
            assert headers.get("connection") == "close"
            outcomes.append(str(status))
        except (ConnectionError, asyncio.IncompleteReadError):
            outcomes.append("closed")  # the server closed while this client was still sending
        finally:
            answer.cancel()
            writer.close()

    async def main() -> list[str]:
        outcomes: list[str] = []
        await asyncio.gather(*(client(outcomes) for _ in range(50)))
        await asyncio.gather(*(client(outcomes) for _ in range(50)))
        return outcomes

    with bounded(api):
        outcomes = asyncio.run(main())
    # A client still sending when the server closes may get a reset instead of the answer (TCP drops
    # what it had not read yet), so each outcome is the 401 or a closed connection, never a body read.
    assert len(outcomes) == 100 and set(outcomes) <= {"401", "closed"}
    # A client that waits for the answer after the head gets the 401 at once, the body still unsent.
    status, headers, body = asyncio.run(one_request(
        api.port, b"POST /v4/models/echo/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n"))
    assert status == 401 and headers.get("connection") == "close"
    assert_error_shape(401, body)


def test_an_announced_body_over_the_limit_is_413_and_a_streamed_one_is_cut_at_it(api: Api) -> None:
    async def main() -> None:
        status, headers, body = await one_request(
            api.port, f"POST /v4/models HTTP/1.1\r\nHost: a\r\nx-api-key: {KEY}\r\nContent-Type: application/json"
                      f"\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        assert status == 413 and headers["connection"] == "close"
        assert "1,048,576-byte limit" in assert_error_shape(413, body)["detail"]

        # Chunked, to a route that reads its body: counted as read, 413 once past the limit.
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        status, _, body = await answer_while_sending(
            api.port, f"POST /v5/chat/completions HTTP/1.1\r\nHost: a\r\nx-api-key: {KEY}\r\n"
                      "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
            [chunk] * 64)  # 4 MiB, four times the limit
        assert status == 413, body
        assert_error_shape(413, body)

    with bounded(api):
        asyncio.run(main())


def test_a_chunked_body_in_small_chunks_within_the_limit_passes_the_guards(api: Api) -> None:
    """Chunk headers are where trailers could start: many of them must not count as a long head."""
    async def main() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(f"POST /v5/chat/completions HTTP/1.1\r\nHost: a\r\nx-api-key: {KEY}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        body = b'{"model": "echo", "messages": [], "pad": "' + b"a" * (MAX_BODY // 2) + b'"}'
        for i in range(0, len(body), 1000):
            writer.write(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000]))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        status, _, _ = await asyncio.wait_for(read_response(reader), 10)
        writer.close()
        return status

    assert asyncio.run(main()) not in (400, 408, 413, 431)


# --- 3. slow headers (slowloris) -----------------------------------------------------------------------------


def test_slow_headers_are_cut_off_after_the_header_timeout(api: Api) -> None:
    async def slow(results: list[Any]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        start = time.monotonic()
        answer = asyncio.ensure_future(read_response(reader))
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
            for i in range(100):  # one header line every 0.2 s: 20 s if nothing stopped it
                if answer.done():
                    break
                writer.write(f"x-slow-{i}: y\r\n".encode())
                await writer.drain()
                await asyncio.sleep(0.2)
        except ConnectionError:
            pass
        try:
            status, headers, body = await asyncio.wait_for(answer, 10)
            assert_error_shape(status, body)
            results.append((status, time.monotonic() - start))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            results.append((type(exc).__name__, time.monotonic() - start))
        finally:
            writer.close()

    async def main() -> list[Any]:
        results: list[Any] = []
        await asyncio.gather(*(slow(results) for _ in range(MAX_CONNECTIONS // 2)))
        return results

    with bounded(api):
        results = asyncio.run(main())
    assert {status for status, _ in results} == {408}
    assert max(took for _, took in results) < 10  # not the 20 s the clients would have taken


# --- 4. connections that never send, beyond the cap ---------------------------------------------------------------


def test_connections_beyond_the_cap_get_503_and_silent_ones_are_closed(api: Api) -> None:
    extra = 30

    async def main() -> tuple[list[Any], float]:
        opened = []
        for _ in range(MAX_CONNECTIONS + extra):
            opened.append(await asyncio.open_connection("127.0.0.1", api.port))
        start = time.monotonic()

        async def outcome(reader: asyncio.StreamReader) -> Any:
            try:
                status, _, body = await asyncio.wait_for(read_response(reader), 15)
                assert_error_shape(status, body)
                return status
            except asyncio.IncompleteReadError as exc:
                return "closed" if not exc.partial else "partial"

        results = await asyncio.gather(*(outcome(r) for r, _ in opened))
        took = time.monotonic() - start
        for _, writer in opened:
            writer.close()
        return list(results), took

    # While the cap is full, a probe may itself be one connection too many: a quick 503 is an answer.
    with bounded(api, healthz_may_be=(200, 503)):
        results, took = asyncio.run(main())
    assert results.count(503) >= extra - 5  # the poller's probes take a few places now and then
    assert results.count("closed") + results.count(503) == len(results)
    assert took < HEADER_TIMEOUT + 10  # the silent ones were closed by the header timeout


# --- 5. header count and size -------------------------------------------------------------------------------


def test_too_many_or_too_large_headers_are_431(api: Api) -> None:
    async def main() -> None:
        many = "".join(f"x-h{i}: v\r\n" for i in range(MAX_HEADERS + 1))
        status, _, body = await one_request(api.port, f"GET /healthz HTTP/1.1\r\nHost: a\r\n{many}\r\n".encode())
        assert status == 431 and "header fields" in assert_error_shape(431, body)["detail"]

        big = "y" * (MAX_HEADER_BYTES + 1)
        status, _, body = await one_request(api.port, f"GET /healthz HTTP/1.1\r\nHost: a\r\nx-big: {big}\r\n\r\n"
                                            .encode())
        assert status == 431
        assert_error_shape(431, body)

        long_url = "/v4/models?" + "q=1&" * MAX_HEADER_BYTES
        status, _, body = await one_request(api.port, f"GET {long_url} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        assert status == 431

        # An endless header value, never finished: cut at the limit, not buffered.
        status, _, body = await answer_while_sending(
            api.port, b"GET /healthz HTTP/1.1\r\nHost: a\r\nx-endless: ", [b"z" * 65536] * 200)
        assert status == 431

        # Within the limits it is an ordinary request.
        status, _, _ = await one_request(api.port, f"GET /healthz HTTP/1.1\r\nHost: a\r\n{many[:200]}\r\n".encode())
        assert status == 200

    with bounded(api):
        asyncio.run(main())


def test_many_header_floods_at_once_stay_bounded(api: Api) -> None:
    async def flood(statuses: list[Any]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        try:
            for i in range(20_000):
                writer.write(b"x-%d: %s\r\n" % (i, b"v" * 40))
                if i % 500 == 0:
                    await writer.drain()
            await writer.drain()
        except ConnectionError:
            pass
        try:
            status, _, _ = await asyncio.wait_for(read_response(reader), 10)
            statuses.append(status)
        except (ConnectionError, asyncio.IncompleteReadError):
            statuses.append("closed")
        writer.close()

    async def main() -> list[Any]:
        statuses: list[Any] = []
        await asyncio.gather(*(flood(statuses) for _ in range(40)))
        return statuses

    with bounded(api):
        statuses = asyncio.run(main())
    assert set(statuses) <= {431, "closed"} and 431 in statuses


# --- 6. idle keep-alive ----------------------------------------------------------------------------------------


def test_an_idle_keep_alive_connection_is_closed(api: Api) -> None:
    async def main() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        status, _, _ = await read_response(reader)
        assert status == 200
        start = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), KEEP_ALIVE + 10)  # EOF once the server closes
        writer.close()
        assert rest == b""
        return time.monotonic() - start

    with bounded(api):
        idle = asyncio.run(main())
    assert idle < KEEP_ALIVE + 5


# --- 7. trailers -------------------------------------------------------------------------------------------------


def test_a_key_in_trailers_never_authenticates(api: Api) -> None:
    def chunked(headers: str, trailers: str) -> bytes:
        return (f"POST /v4/models HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n{headers}"
                f"Transfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n{trailers}\r\n").encode()

    async def main() -> None:
        # uvicorn merges trailers that arrive with the head into the request's headers before any ASGI
        # code runs, so the connection guard refuses requests with trailers outright.
        for trailers in (f"x-api-key: {KEY}\r\n", f"x-selected-account-id: other-account\r\nx-api-key: {KEY}\r\n"):
            status, _, body = await one_request(api.port, chunked("", trailers))
            assert status == 400, body
            assert "trailers" in assert_error_shape(400, body)["detail"]
        # Trailers sent after the app started reading the body: the key in them changes nothing either.
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        request = chunked("", f"x-api-key: {KEY}\r\n")
        writer.write(request[:request.index(b"0\r\n")])
        await asyncio.sleep(0.3)
        writer.write(request[request.index(b"0\r\n"):])
        status, _, body = await asyncio.wait_for(read_response(reader), 10)
        writer.close()
        assert status == 401, body
        # Without trailers and with the key in the head, the same request passes auth (and meets the 405).
        status, _, body = await one_request(api.port, chunked(f"x-api-key: {KEY}\r\n", ""))
        assert status == 405, body

    asyncio.run(main())


# --- the app's own answers: in-process server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    app = create_app(make_catalog(), api_keys=API_KEYS, include_inference=False,
                     limits=ApiLimits(max_body_bytes=64 * 1024))
    with running(app) as url:
        yield url


@pytest.fixture()
def client(app_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app_url, headers={"x-api-key": ACME_KEY}, timeout=10) as c:
        yield c


def _shape(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return assert_error_shape(status, response.content)


def test_a_trailing_slash_with_a_hostile_host_is_a_404_not_a_redirect(client: httpx.Client) -> None:
    for path in ("/v4/models/", "/v5/models/", "/v4/model-groups/"):
        r = client.get(path, headers={"host": "evil.example"}, follow_redirects=False)
        _shape(r, 404)
        assert "location" not in r.headers and "evil.example" not in r.text


def test_every_error_keeps_the_json_shape(client: httpx.Client, app_url: str) -> None:
    _shape(client.get("/no/such/route"), 404)
    _shape(client.put("/healthz"), 405)
    _shape(client.get("/v4/models", params={"limit": 0}), 422)
    _shape(httpx.get(f"{app_url}/v4/models"), 401)
    _shape(client.get("/v4/models", headers={"x-selected-account-id": "nope"}), 403)
    _shape(client.get("/v4/models", headers=[("x-api-key", "wrong"), ("x-api-key", ACME_KEY)]), 401)  # the first
    r = client.post("/v4/models", content=b"x" * (64 * 1024 + 1), headers={"content-type": "application/json"})
    assert _shape(r, 413) and r.headers["connection"] == "close"


def test_open_routes_need_no_key(app_url: str) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert httpx.get(f"{app_url}{path}").status_code == 200, path
    # The OpenAPI document still declares the key header on the catalogue routes.
    doc = httpx.get(f"{app_url}/openapi.json").json()
    assert "APIKeyHeader" in doc["components"]["securitySchemes"]
    assert doc["paths"]["/v5/models"]["get"]["security"] == [{"APIKeyHeader": []}]


def test_the_number_of_sort_keys_is_capped(client: httpx.Client) -> None:
    from sgp_infra.api.paging import MAX_SORT_KEYS

    ok = client.get("/v4/models", params=[("sort_by", "name:asc")] * MAX_SORT_KEYS)
    assert ok.status_code == 200
    over = _shape(client.get("/v4/models", params={"sort_by": ",".join(["name:asc"] * (MAX_SORT_KEYS + 1))}), 422)
    assert "too many sort_by keys" in over["detail"]
    _shape(client.get("/v4/model-deployments", params=[("sort_by", "name:desc")] * 1000), 422)


@pytest.mark.parametrize("depth", [100, 50_000])
def test_deeply_nested_json_on_catalogue_routes_is_a_4xx_json_error(client: httpx.Client, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    deep_object = '{"a":' * depth + "1" + "}" * depth
    in_url = nested[:3000] + nested[-3000:]  # a query string is bounded by the head limit anyway
    answers = [
        client.get("/v5/models", params={"sort_by": in_url}),
        client.get("/v4/models", params={"sort_by": in_url, "view": in_url}),
        client.get(f"/v5/models/{nested[:200]}"),
        client.get("/v4/models", params={"model_type": deep_object[:5000]}),
        client.request("GET", "/v5/models", content=nested, headers={"content-type": "application/json"}),
        client.post("/v4/models", content=deep_object, headers={"content-type": "application/json"}),
        client.post("/v5/models", content=nested, headers={"content-type": "application/json"}),
        client.patch("/v4/models/echo", content=deep_object, headers={"content-type": "application/json"}),
    ]
    for r in answers:
        assert r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text[:200])
        if r.status_code >= 400:
            _shape(r, r.status_code)


def test_the_caller_comes_from_the_guard_not_from_headers_read_later(client: httpx.Client) -> None:
    """The caller dependency hands on the guard's decision; the account narrowing still applies."""
    both = client.get("/v4/models", headers={"x-api-key": "both-key-5555555555"}).json()
    narrowed = client.get("/v4/models", headers={"x-api-key": "both-key-5555555555",
                                                 "x-selected-account-id": "other-account"}).json()
    assert narrowed["total_item_count"] < both["total_item_count"]
    assert {m["account_id"] for m in narrowed["items"]} == {"other-account"}



def test_the_v5_page_cache_is_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every distinct query string is a cache entry; their bytes stay under the cap however many there are."""
    from sgp_infra.api import routes_v5

    monkeypatch.setattr(routes_v5, "PAGE_CACHE_BYTES", 350_000)
    app = create_app(make_catalog(extra_acme=400, extra_other=0), api_keys=API_KEYS, include_inference=False)
    with running(app) as url, httpx.Client(base_url=url, headers={"x-api-key": ACME_KEY}) as client:
        sizes = []
        for i in range(20):
            r = client.get("/v5/models", params={"limit": 100, "unknown": i})
            assert r.status_code == 200
            sizes.append(len(r.content))
        again = client.get("/v5/models", params={"limit": 100, "unknown": 19})
        assert again.content == r.content  # answered from the cache
        _shape(client.get("/v5/models", params={"limit": 0}), 422)
        held = sum(len(body) for body in app.state.v5_page_cache.values())
        assert sum(sizes) > 350_000 >= held >= sizes[-1]
        big = client.get("/v5/models", params={"limit": 400})  # a page over the whole cap: not cached
        assert big.status_code == 200 and len(big.content) > 350_000
        assert sum(len(body) for body in app.state.v5_page_cache.values()) == held
