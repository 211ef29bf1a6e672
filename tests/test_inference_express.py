"""The inference express lane (``sgp_infra.api.inference.express``) over real loopback servers.

Two API servers run side by side on the same catalogue and the same demo-model
backends: one with the express lane (``running(app, express=True)``), one with
uvicorn's own httptools protocol (``express=False``).  Every observable the lane
promises to keep (status, JSON body, headers, metrics, access line, HTTP/1.1
connection handling, disconnect handling) is compared between the two, and a
plain ASGI middleware added to each app counts what goes through the ASGI stack,
so the tests can tell which requests the lane itself answered.

Nothing in the lane is mocked: requests are real HTTP over 127.0.0.1 (httpx, or
raw sockets where the wire matters: keep-alive, pipelining, ``Expect:
100-continue``, HTTP/1.0, disconnects).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api_helpers import running
from sgp_infra.api import http_protocol
from sgp_infra.api.inference import InferenceSettings, express
from sgp_infra.api.inference.http1 import ReadTimeout
from sgp_infra.api.logs import ACCESS_LOGGER
from sgp_infra.demo_model import embed, overlap_score
from test_inference_helpers import (ACCOUNT, HEADERS, KEY, FaultServer, backend_map, demo_backends, free_port,
                                    make_app, make_catalog, read_request)

pytestmark = pytest.mark.timeout(120)

GREETING = "echo: "
#: Small enough that a 413 is cheap to provoke, large enough for a body over uvicorn's
#: 64 KiB read high-water mark (the large-body disconnect test).
MAX_BODY = 256 * 1024
#: Models added to the test catalogue, each served by a fault server (or nothing).
FAULTY = ("down", "broken", "busy", "hang", "scripted")
CATALOG = make_catalog({name: {"model_type": "COMPLETION", "model_template_id": "sgp-completion"}
                        for name in FAULTY})
SETTINGS = dict(retries=2, backoff=0.01, wake_poll_interval=0.05, max_body_bytes=MAX_BODY,
                overrides={"down": {"cold_start": 0.3}, "hang": {"read": 8}, "scripted": {"read": 1}})
COMPLETIONS = "/v4/models/{model_deployment_id}/completions"


# --- backends that misbehave ------------------------------------------------------------------


def _answer(status: int, body: bytes, extra: bytes = b"") -> Any:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
                         % (status, len(body), extra, body))
            await writer.drain()
    return behaviour


class Held:
    """Answers 200 once ``release`` is set: fills the in-flight cap of ``tiny``."""

    def __init__(self) -> None:
        self.release = threading.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        body = b'{"completions": [["x", ["ok"]]], "finish_reason": "stop"}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()


class Hang:
    """Reads a request and never answers; counts requests and connections the API dropped."""

    def __init__(self) -> None:
        self.requests = 0
        self.dropped = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        self.requests += 1
        await reader.read()  # returns at EOF: when the API gives up on (cancels) the request
        self.dropped += 1


Step = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]


class Script:
    """Answers each request with the next of ``steps`` (shared by every connection, in request order).

    A step returns ``False`` to end its connection.  Keep-alive otherwise, so a
    warm-up answer leaves an idle connection in the API's pool and the next call
    goes out on it: for the express server, on a :class:`~sgp_infra.api.inference.express.Flight`.
    """

    def __init__(self) -> None:
        self.steps: collections.deque[Step] = collections.deque()
        self.hanging = 0
        self.dropped = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            if await self.steps.popleft()(reader, writer) is False:
                return

    @staticmethod
    def answer(status: int, body: bytes, extra: bytes = b"") -> Step:
        async def step(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
                         % (status, len(body), extra, body))
            await writer.drain()
        return step

    @staticmethod
    def ok(text: str = "fine") -> Step:
        return Script.answer(200, json.dumps({"completions": [["p", [text]]], "finish_reason": "stop"}).encode())

    @staticmethod
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.transport.abort()
        return False

    async def hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        self.hanging += 1
        await reader.read()  # returns at EOF: when the API gives up on (drops) the request
        self.dropped += 1
        return False


# --- the two servers ------------------------------------------------------------------------------


class CountingMiddleware:
    """A plain ASGI middleware, outermost: records every HTTP request the ASGI app sees."""

    def __init__(self, app: Any, seen: list[tuple[str, str]]):
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@dataclass
class Api:
    url: str
    app: Any
    express: bool
    seen: list[tuple[str, str]] = field(default_factory=list)

    def in_flight(self, model: str) -> int:
        return int(self.app.state.inference.in_flight.get(CATALOG.models[model].object_name, 0))

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def saw(self, path: str) -> int:
        return sum(1 for _m, p in self.seen if p == path)


@dataclass
class Servers:
    express: Api
    plain: Api
    held: Held
    hang: Hang
    script: Script

    def both(self) -> tuple[Api, Api]:
        return self.express, self.plain


def _api(backends: dict[str, str], express: bool) -> Any:
    app = make_app(CATALOG, backends, settings=InferenceSettings(**SETTINGS))  # type: ignore[arg-type]
    seen: list[tuple[str, str]] = []
    app.add_middleware(CountingMiddleware, seen=seen)  # before the first request builds the stack
    return app, seen


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    held, hang, script = Held(), Hang(), Script()
    with demo_backends(greeting=GREETING) as urls, FaultServer(_answer(500, b'{"detail": "CUDA OOM"}')) as broken, \
            FaultServer(_answer(503, b"busy", b"retry-after: 7\r\n")) as busy, FaultServer(held) as held_url, \
            FaultServer(hang) as hang_url, FaultServer(script) as script_url:
        backends = backend_map(CATALOG, urls)
        backends.update({"down": f"http://127.0.0.1:{free_port()}", "broken": broken, "busy": busy,
                         "tiny": held_url, "hang": hang_url, "scripted": script_url})
        (app_e, seen_e), (app_p, seen_p) = _api(backends, True), _api(backends, False)
        try:
            with running(app_e, express=True) as url_e, running(app_p, express=False) as url_p:
                assert http_protocol(app_e, express=True) != "httptools"  # the lane really is on
                yield Servers(Api(url_e, app_e, True, seen_e), Api(url_p, app_p, False, seen_p), held, hang, script)
        finally:
            held.release.set()


@pytest.fixture(params=[True, False], ids=["express", "plain"])
def api(request: pytest.FixtureRequest, servers: Servers) -> Api:
    return servers.express if request.param else servers.plain


# --- helpers ------------------------------------------------------------------------------------


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def assert_counted_as_client_gone(api: Api, before: str, model: str) -> None:
    """Since the ``before`` scrape, one completion of ``model`` was counted as the client leaving (499)."""
    after = api.metrics()

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("sgp_infra_model_errors_total", kind="client_disconnect", model=model) == 1
    assert delta("sgp_infra_model_requests_total", model=model, operation="completion", code="499") == 1
    assert delta("sgp_infra_api_requests_total", method="POST", route=COMPLETIONS, status="499") == 1
    assert delta("sgp_infra_model_errors_total", kind="read_timeout", model=model) == 0


def comparable_headers(r: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in r.headers.multi_items() if k != "date"]


def comparable_body(r: httpx.Response) -> Any:
    """The JSON body, with the v5 ``created`` stamp (the time of the answer) made comparable."""
    try:
        body = r.json()
    except ValueError:
        return r.content
    if isinstance(body, dict) and isinstance(body.get("created"), int) and abs(body["created"] - time.time()) < 120:
        body = {**body, "created": "<now>"}
    return body


def assert_same(a: httpx.Response, b: httpx.Response, what: str) -> None:
    assert a.status_code == b.status_code, \
        f"{what}: express {a.status_code} {a.text!r} vs plain {b.status_code} {b.text!r}"
    assert comparable_body(a) == comparable_body(b), f"{what}: bodies differ: {a.text!r} vs {b.text!r}"
    assert comparable_headers(a) == comparable_headers(b), f"{what}: headers differ"


def on_both(servers: Servers, method: str, path: str, **kw: Any) -> tuple[httpx.Response, httpx.Response]:
    out = []
    for api in servers.both():
        with httpx.Client(base_url=api.url, timeout=30) as client:
            out.append(client.request(method, path, **kw))
    return out[0], out[1]


# --- raw HTTP/1.x over a socket ---------------------------------------------------------------------


@dataclass
class RawResponse:
    version: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        return next((v for k, v in self.headers if k == name), None)

    def json(self) -> Any:
        return json.loads(self.body)

    def comparable(self) -> tuple[Any, ...]:
        return self.version, self.status, [h for h in self.headers if h[0] != "date"], self.body


def request_bytes(method: str, path: str, body: Optional[bytes] = None, *, version: str = "1.1",
                  headers: Optional[list[tuple[str, str]]] = None, key: Optional[str] = KEY) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "host: 127.0.0.1"]
    if key is not None:
        lines.append(f"x-api-key: {key}")
    if body is not None:
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def post(path: str, payload: Any, **kw: Any) -> bytes:
    return request_bytes("POST", path, json.dumps(payload).encode(), **kw)


class Raw:
    """One client connection, read with a buffered file."""

    def __init__(self, url: str, timeout: float = 15):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        line = self.file.readline(65536)
        if not line:
            raise ConnectionError("the server closed the connection")
        return line.rstrip(b"\r\n")

    def response(self) -> RawResponse:
        version, status, *_ = self._line().decode().split(" ", 2)
        headers = []
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        out = RawResponse(version, int(status), headers, b"")
        if out.status < 200:  # 100 Continue: no body
            return out
        if out.header("transfer-encoding") == "chunked":
            body = bytearray()
            while size := int(self._line().split(b";")[0], 16):
                body += self.file.read(size)
                self.file.read(2)
            while self._line():  # trailers
                pass
            out.body = bytes(body)
        else:
            out.body = self.file.read(int(out.header("content-length") or 0))
        return out

    def closed_by_server(self, timeout: float = 5) -> bool:
        """Whether the server closes the connection (EOF) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self.file.read(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def sse_texts(body: bytes, pick: Callable[[dict[str, Any]], str]) -> list[str]:
    events = [e[6:] for e in body.decode().split("\n\n") if e.startswith("data: ")]
    return [pick(json.loads(e)) for e in events]


# === 1. equivalence ==============================================================================

V4_SUCCESS = (
    [(f"v4 completions {m}", f"/v4/models/{m}/completions", {"prompt": "hello there", "max_tokens": 5})
     for m in ("sgp-echo", "sgp-chat", "vllm-chat", "vllm-cmpl", "cohere-gen")]
    + [(f"v4 chat {m}", f"/v4/models/{m}/chat-completions", {"prompt": "how are you", "chat_history": []})
       for m in ("sgp-chat", "vllm-chat", "cohere-gen")]
    + [(f"v4 embeddings {m}", f"/v4/models/{m}/embeddings", {"texts": ["alpha", "beta"]})
       for m in ("sgp-embed", "vllm-embed", "cohere-embed")]
    + [(f"v4 rerankings {m}", f"/v4/models/{m}/rerankings", {"query": "red whale", "chunks": ["red fox", "red whale"]})
       for m in ("sgp-rerank", "cohere-rerank")]
)
V5_SUCCESS = (
    [(f"v5 chat {m}", "/v5/chat/completions",
      {"model": f"launch/{m}", "messages": [{"role": "user", "content": "hey you"}]})
     for m in ("vllm-chat", "sgp-chat", "cohere-gen", "vllm-cmpl")]
    + [(f"v5 completions {m}", "/v5/completions", {"model": m, "prompt": "abc"})
       for m in ("vllm-cmpl", "sgp-echo", "cohere-gen", "vllm-chat")]
)


@pytest.mark.parametrize("what, path, payload", V4_SUCCESS + V5_SUCCESS, ids=[c[0] for c in V4_SUCCESS + V5_SUCCESS])
def test_typed_answers_are_the_same_with_and_without_the_lane(servers: Servers, what: str, path: str,
                                                               payload: dict[str, Any]) -> None:
    before = servers.express.saw(path)
    a, b = on_both(servers, "POST", path, json=payload, headers=HEADERS)
    assert a.status_code == 200, a.text
    assert_same(a, b, what)
    assert a.headers["content-type"] == "application/json"
    assert a.headers["content-length"] == str(len(a.content))
    assert servers.express.saw(path) == before, "the express server handed a non-streamed typed call to ASGI"
    body = a.json()
    if "/embeddings" in path:
        assert body["embeddings"] == [embed("alpha"), embed("beta")]
    elif "/rerankings" in path:
        assert body["chunk_scores"] == [overlap_score("red whale", c) for c in payload["chunks"]]
    elif path.startswith("/v4/"):
        assert body["completions"][0][1] == [GREETING + payload["prompt"]]
    elif path == "/v5/chat/completions":
        assert body["choices"][0]["message"]["content"] == GREETING + "hey you"
    else:
        assert body["choices"][0]["text"] == GREETING + "abc"


ERRORS: list[tuple[str, int, str, dict[str, Any]]] = [
    # (what, status, path, httpx request kwargs)
    ("401 no key v4", 401, "/v4/models/sgp-echo/completions", dict(json={"prompt": "x"})),
    ("401 no key v5", 401, "/v5/chat/completions", dict(json={"model": "vllm-chat", "messages": []})),
    ("401 wrong key", 401, "/v4/models/sgp-echo/embeddings",
     dict(json={"texts": ["a"]}, headers={"x-api-key": "nope"})),
    ("401 empty key", 401, "/v4/models/sgp-echo/completions", dict(json={"prompt": "x"}, headers={"x-api-key": ""})),
    ("403 account", 403, "/v4/models/sgp-echo/completions",
     dict(json={"prompt": "x"}, headers={**HEADERS, "x-selected-account-id": "other-account"})),
    ("404 v4 model", 404, "/v4/models/missing/completions", dict(json={"prompt": "x"}, headers=HEADERS)),
    ("404 v5 model", 404, "/v5/chat/completions",
     dict(json={"model": "launch/missing", "messages": [{"role": "user", "content": "x"}]}, headers=HEADERS)),
    ("404 v5 vendor", 404, "/v5/completions", dict(json={"model": "openai/gpt-5", "prompt": "x"}, headers=HEADERS)),
    ("422 bad json", 422, "/v4/models/sgp-echo/completions",
     dict(content=b"{not json", headers={**HEADERS, "content-type": "application/json"})),
    ("422 not an object", 422, "/v4/models/sgp-echo/chat-completions", dict(json=[1, 2], headers=HEADERS)),
    ("422 v5 not an object", 422, "/v5/completions", dict(json="text", headers=HEADERS)),
    ("422 empty body", 422, "/v4/models/sgp-echo/completions", dict(headers=HEADERS)),
    ("422 field", 422, "/v4/models/sgp-echo/completions", dict(json={"prompt": 3}, headers=HEADERS)),
    ("422 binding", 422, "/v4/models/sgp-echo/completions",
     dict(json={"prompt": "x", "model_request_parameters": {"bindings": {"temperature": "hot"}}}, headers=HEADERS)),
    ("422 v5 no model", 422, "/v5/chat/completions", dict(json={"messages": []}, headers=HEADERS)),
    ("400 op embeddings", 400, "/v4/models/vllm-chat/embeddings", dict(json={"texts": ["a"]}, headers=HEADERS)),
    ("400 op rerank", 400, "/v4/models/vllm-embed/rerankings",
     dict(json={"query": "a", "chunks": ["a"]}, headers=HEADERS)),
    ("502 backend 500", 502, "/v4/models/broken/completions", dict(json={"prompt": "x"}, headers=HEADERS)),
    ("503 backend busy", 503, "/v4/models/busy/completions", dict(json={"prompt": "x"}, headers=HEADERS)),
    ("503 backend down", 503, "/v5/completions", dict(json={"model": "launch/down", "prompt": "x"}, headers=HEADERS)),
]


@pytest.mark.parametrize("what, status, path, kw", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_the_same_with_and_without_the_lane(servers: Servers, what: str, status: int, path: str,
                                                       kw: dict[str, Any]) -> None:
    before = servers.express.saw(path)
    a, b = on_both(servers, "POST", path, **kw)
    assert a.status_code == status, a.text
    assert_same(a, b, what)
    body = a.json()
    assert set(body) >= {"status", "error", "detail"} and body["status"] == status
    assert a.headers["content-type"] == "application/json"
    assert a.headers["content-length"] == str(len(a.content))
    assert servers.express.saw(path) == before, "the express server handed a typed error to ASGI"
    if status == 401:
        assert a.headers["www-authenticate"] == "x-api-key"
    else:
        assert "www-authenticate" not in a.headers
    if what == "503 backend busy":
        assert a.headers["retry-after"] == "7"
    elif what == "503 backend down":
        assert a.headers["retry-after"] == "5"
    elif status < 500:
        assert "retry-after" not in a.headers


def test_429_at_the_in_flight_cap_is_the_same(servers: Servers) -> None:
    """``tiny`` takes 1 x 2 requests in flight; its backend holds them until released."""
    results: list[int] = []
    threads = [threading.Thread(target=lambda u=api.url: results.append(httpx.post(
        f"{u}/v4/models/tiny/completions", json={"prompt": "x"}, headers=HEADERS, timeout=30).status_code))
        for api in servers.both() for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for api in servers.both():
            assert wait_for(lambda api=api: api.in_flight("tiny") == 2, 20), "the held requests were not admitted"
        a, b = on_both(servers, "POST", "/v4/models/tiny/completions", json={"prompt": "x"}, headers=HEADERS)
        assert a.status_code == 429, a.text
        assert_same(a, b, "429")
        assert a.headers["retry-after"] == "1" and "per_worker 1 x max_workers 2" in a.json()["detail"]
    finally:
        servers.held.release.set()
        for t in threads:
            t.join(30)
    assert results == [200] * 4
    for api in servers.both():
        assert api.in_flight("tiny") == 0
        text = api.metrics()
        assert sample(text, "sgp_infra_model_errors_total", kind="over_capacity",
                      model=CATALOG.models["tiny"].object_name) == 1
        assert sample(text, "sgp_infra_api_requests_total", route=COMPLETIONS, status="429") >= 1


@pytest.mark.parametrize("order", ["wrong-first", "right-first"])
def test_duplicate_auth_headers_are_read_like_the_asgi_path(servers: Servers, order: str) -> None:
    keys = ["wrong-key", KEY] if order == "wrong-first" else [KEY, "wrong-key"]
    a, b = on_both(servers, "POST", "/v4/models/sgp-echo/completions", json={"prompt": "x"},
                   headers=[("x-api-key", k) for k in keys])
    assert a.status_code == b.status_code, (
        f"duplicate x-api-key headers ({order}): express lane answered {a.status_code}, "
        f"the ASGI path {b.status_code}: the lane uses the last header, Starlette the first")


# === 2. the lane really answers =====================================================================


def test_the_lane_bypasses_the_asgi_stack_only_for_non_streamed_typed_calls(servers: Servers) -> None:
    sgp = CATALOG.models["sgp-echo"]
    calls: list[tuple[str, str, dict[str, Any], bool]] = [
        # (method, path, request kwargs, answered by the lane when it is on)
        ("POST", "/v4/models/sgp-echo/completions", dict(json={"prompt": "x"}), True),
        ("POST", "/v4/models/sgp-embed/embeddings", dict(json={"texts": ["x"]}), True),
        ("POST", "/v5/chat/completions",
         dict(json={"model": "vllm-chat", "messages": [{"role": "user", "content": "x"}]}), True),
        ("POST", "/v4/models/missing/completions", dict(json={"prompt": "x"}), True),  # errors too
        ("POST", "/v4/models/sgp-echo/completions", dict(json={"prompt": "x", "stream": True}), False),
        ("POST", "/v5/completions", dict(json={"model": "vllm-cmpl", "prompt": "x", "stream": True}), False),
        ("POST", "/v5/inference", dict(json={"model": "launch/v5-generic", "args": {"prompt": "p"}}), False),
        ("POST", f"/v4/models/{sgp.name}/deployments/nope/execute", dict(json={}), False),
        ("GET", "/v4/models", {}, False),
        ("GET", "/v5/chat/completions/models", {}, False),
        ("GET", "/v4/models/sgp-echo/completions", {}, False),  # 405: not a POST
    ]
    for api in servers.both():
        api.seen.clear()
        with httpx.Client(base_url=api.url, headers=HEADERS, timeout=30) as client:
            for method, path, kw, _lane in calls:
                r = client.request(method, path, **kw)
                assert r.status_code < 500, r.text
        through_asgi = [(m, p) for m, p, _kw, lane in calls if not (lane and api.express)]
        assert api.seen == through_asgi, f"express={api.express}: the ASGI stack saw {api.seen}"


def test_opentelemetry_on_sends_typed_calls_through_the_asgi_app(servers: Servers) -> None:
    class Telemetry:  # FastAPI's NativeTelemetry, with a provider "configured"
        wrapped = 0

        def enabled(self) -> bool:
            return True

        async def __call__(self, *, app: Any, scope: Any, receive: Any, send: Any, legacy_otel: bool) -> None:
            Telemetry.wrapped += 1
            await app(scope, receive, send)

    app = make_app(CATALOG, {"sgp-echo": servers.express.app.state.inference.base_url(CATALOG.models["sgp-echo"])})
    app._native_telemetry = Telemetry()  # type: ignore[attr-defined]
    with running(app, express=True) as url:
        r = httpx.post(f"{url}/v4/models/sgp-echo/completions", json={"prompt": "x"}, headers=HEADERS, timeout=30)
    assert r.status_code == 200 and r.json()["completions"] == [["x", [GREETING + "x"]]]
    assert Telemetry.wrapped == 1, "with a tracer provider on, a typed call must be traced by FastAPI"


def test_a_root_path_sends_typed_calls_through_the_asgi_app(servers: Servers) -> None:
    app = make_app(CATALOG, {"sgp-echo": servers.express.app.state.inference.base_url(CATALOG.models["sgp-echo"])})
    seen: list[tuple[str, str]] = []
    app.add_middleware(CountingMiddleware, seen=seen)
    with running(app, express=True, root_path="/api") as url:
        r = httpx.post(f"{url}/v4/models/sgp-echo/completions", json={"prompt": "x"}, headers=HEADERS, timeout=30)
    assert r.status_code == 200 and r.json()["completions"] == [["x", [GREETING + "x"]]]
    assert seen == [("POST", "/api/v4/models/sgp-echo/completions")]


@pytest.mark.parametrize("url, path", [
    ("/v4/models/sgp-echo/completions?trace=1", "/v4/models/sgp-echo/completions"),
    ("/v4/models/sgp%2Decho/completions", "/v4/models/sgp-echo/completions"),
], ids=["query-string", "percent-encoded"])
def test_urls_are_routed_as_uvicorn_routes_them(servers: Servers, url: str, path: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """The lane routes the raw URL itself: a query string or an escape must not change the answer,
    the access line's path or the metrics' route."""
    before = servers.express.saw(path)
    logged = []
    for api in servers.both():
        with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
            caplog.clear()
            with httpx.Client(base_url=api.url, headers=HEADERS, timeout=30) as client:
                r = client.send(client.build_request("POST", api.url + url, json={"prompt": "q"}))
            # the ASGI path logs after the response is sent: wait for the line
            wait_for(lambda: any(x.name == ACCESS_LOGGER for x in caplog.records), 5)
            logged.append([(getattr(x, "path", None), getattr(x, "route", None), getattr(x, "status", None))
                           for x in caplog.records if x.name == ACCESS_LOGGER])
        assert r.status_code == 200 and r.json()["completions"] == [["q", [GREETING + "q"]]], r.text
    assert logged[0] == logged[1] == [(path, COMPLETIONS, 200)]
    assert servers.express.saw(path) == before, "the lane should have answered it"


def test_route_memory_is_bounded_and_routing_stays_right(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    from sgp_infra.api.inference import express

    lane = express.ExpressLane(servers.express.app)
    monkeypatch.setattr(express, "ROUTE_CACHE_SIZE", 3)
    urls = [f"/v4/models/m{i}/completions".encode() for i in range(10)]
    for _round in range(2):
        for i, url in enumerate(urls):
            hit = lane.route(url)
            assert hit is not None and hit[0] == COMPLETIONS and hit[2] == (f"m{i}",) and hit[3] == url.decode()
    assert len(lane._routes) == 3
    for other in (b"/v4/models", b"/healthz", b"/v4/models/m1/deployments/d/execute", b"/v5/inference",
                  b"/v4/models/\xff/completions"):
        assert lane.route(other) is None, other


def test_a_typed_call_pipelined_behind_a_held_one_waits_for_it(servers: Servers) -> None:
    """The lane answers one request at a time per connection; the next waits in uvicorn's pipeline and
    goes through the ASGI app, and the answers come back in order."""
    path = "/v4/models/sgp-echo/completions"
    api = servers.express
    before = api.saw(path)
    with Raw(api.url) as raw:
        raw.send(post("/v4/models/busy/completions", {"prompt": "first"}) + post(path, {"prompt": "second"}))
        first, second = raw.response(), raw.response()
    assert first.status == 503 and first.header("retry-after") == "7"
    assert second.status == 200 and second.json()["completions"] == [["second", [GREETING + "second"]]]
    assert api.saw(path) == before + 1


def test_a_client_leaving_during_a_handed_over_stream_cancels_it(servers: Servers) -> None:
    """A streamed call the lane handed to the ASGI app: the client leaving still cancels the backend call."""
    hang, model = servers.hang, CATALOG.models["hang"].object_name
    api = servers.express
    requests, dropped = hang.requests, hang.dropped
    with Raw(api.url) as raw:
        raw.send(post("/v4/models/hang/completions", {"prompt": "x", "stream": True}))
        assert wait_for(lambda: hang.requests == requests + 1, 10), "the backend never got the request"
        assert api.in_flight("hang") == 1
    assert wait_for(lambda: api.in_flight("hang") == 0, 5), "the stream was not cancelled"
    assert wait_for(lambda: hang.dropped == dropped + 1, 5), "the backend request was not cancelled"
    assert f'sgp_infra_model_requests_in_flight{{model="{model}"}} 0.0' in api.metrics()


# === 3. fallbacks ==================================================================================


@pytest.mark.parametrize("path, payload, pick", [
    ("/v4/models/sgp-echo/completions", {"prompt": "one two three", "stream": True},
     lambda e: e["completions"][0][1][0]),
    ("/v4/models/vllm-chat/chat-completions", {"prompt": "one two three", "chat_history": [], "stream": True},
     lambda e: e["completions"][0][1][0]),
    ("/v5/chat/completions", {"model": "launch/cohere-gen", "messages": [{"role": "user", "content": "one two three"}],
                              "stream": True}, lambda e: e["choices"][0]["delta"].get("content") or ""),
    ("/v5/completions", {"model": "vllm-cmpl", "prompt": "one two three", "stream": True},
     lambda e: e["choices"][0]["text"] if e.get("choices") else ""),
], ids=["v4-sgp", "v4-vllm-chat", "v5-chat-cohere", "v5-cmpl-vllm"])
def test_streamed_calls_fall_back_and_stream_the_same(servers: Servers, path: str, payload: dict[str, Any],
                                                      pick: Callable[[dict[str, Any]], str]) -> None:
    answers = []
    for api in servers.both():
        before = api.saw(path)
        with httpx.Client(base_url=api.url, headers=HEADERS, timeout=30) as client, \
                client.stream("POST", path, json=payload) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["transfer-encoding"] == "chunked"
            body = r.read()
        assert api.saw(path) == before + 1, "a streamed call must go through the ASGI app"
        texts = sse_texts(body, pick)
        assert len(texts) >= 3 and "".join(texts) == GREETING + "one two three"
        answers.append(texts)
    assert answers[0] == answers[1]


def _big_body(size: int) -> bytes:
    head = b'{"prompt": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413_through_the_asgi_app(servers: Servers, chunked: bool) -> None:
    path = "/v4/models/sgp-echo/completions"
    big = _big_body(MAX_BODY + 1)
    out = []
    for api in servers.both():
        before = api.saw(path)
        content: Any = iter([big[i:i + 10000] for i in range(0, len(big), 10000)]) if chunked else big
        with httpx.Client(base_url=api.url, headers=HEADERS, timeout=30) as client:
            r = client.post(path, content=content, headers={"content-type": "application/json"})
            assert r.status_code == 413, r.text
            assert "limit" in r.json()["detail"]
            assert api.saw(path) == before + 1, "an over-limit body must be answered by the ASGI app"
            # the connection (and the server) still serve the next request
            assert client.post(path, json={"prompt": "after"}).json()["completions"][0][1] == [GREETING + "after"]
        out.append(r)
    assert_same(out[0], out[1], "413")


def test_body_at_the_limit_is_answered_by_the_lane(servers: Servers) -> None:
    path = "/v4/models/sgp-echo/completions"
    body = b'{"prompt": "edge"}'
    body += b" " * (MAX_BODY - len(body))  # JSON allows trailing white space
    assert len(body) == MAX_BODY
    before = servers.express.saw(path)
    a, b = on_both(servers, "POST", path, content=body, headers={**HEADERS, "content-type": "application/json"})
    assert a.status_code == 200, a.text
    assert_same(a, b, "body at the limit")
    assert servers.express.saw(path) == before


def test_expect_100_continue_over_a_raw_socket(servers: Servers) -> None:
    path = "/v4/models/sgp-echo/completions"
    body = b'{"prompt": "continued"}'
    answers = []
    for api in servers.both():
        before = api.saw(path)
        with Raw(api.url) as raw:
            head = request_bytes("POST", path, body, headers=[("expect", "100-continue")])
            raw.send(head[:-len(body)])  # headers only: wait to be asked for the body
            interim = raw.response()
            assert (interim.status, interim.headers) == (100, []), interim
            raw.send(body)
            final = raw.response()
            assert final.status == 200 and final.json()["completions"] == [["continued", [GREETING + "continued"]]]
            # still a keep-alive connection
            raw.send(post(path, {"prompt": "next"}))
            assert raw.response().json()["completions"][0][1] == [GREETING + "next"]
        assert api.saw(path) >= before + 1, "Expect: 100-continue must be handed to the ASGI app"
        answers.append(final.comparable())
    assert answers[0] == answers[1]


# === 4. metrics and access log =================================================================


def test_metrics_and_access_lines_match_the_asgi_path(servers: Servers, caplog: pytest.LogCaptureFixture) -> None:
    sequence = [({"prompt": "a"}, HEADERS, 200), ({"prompt": "b"}, HEADERS, 200), ({"prompt": "c"}, HEADERS, 200),
                ({"prompt": 3}, HEADERS, 422), ({"prompt": "x"}, {}, 401)]
    model = CATALOG.models["sgp-echo"].object_name
    deltas = []
    for api in servers.both():
        before = api.metrics()
        with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
            caplog.clear()
            for payload, headers, status in sequence:
                r = httpx.post(f"{api.url}/v4/models/sgp-echo/completions", json=payload, headers=headers, timeout=30)
                assert r.status_code == status, r.text
            # the ASGI path logs after the response is sent: wait for the last line
            wait_for(lambda: sum(x.name == ACCESS_LOGGER for x in caplog.records) >= len(sequence), 5)
            lines = [(getattr(r, "method", None), getattr(r, "path", None), getattr(r, "route", None),
                      getattr(r, "status", None)) for r in caplog.records if r.name == ACCESS_LOGGER]
            lines = [line for line in lines if line[1] == "/v4/models/sgp-echo/completions"]
        assert lines == [("POST", "/v4/models/sgp-echo/completions", COMPLETIONS, s) for _p, _h, s in sequence]
        after = api.metrics()

        def delta(name: str, **labels: str) -> float:  # used only in the iteration that defines it
            return sample(after, name, **labels) - sample(before, name, **labels)  # noqa: B023

        got = {
            "api 200": delta("sgp_infra_api_requests_total", method="POST", route=COMPLETIONS, status="200"),
            "api 422": delta("sgp_infra_api_requests_total", method="POST", route=COMPLETIONS, status="422"),
            "api 401": delta("sgp_infra_api_requests_total", method="POST", route=COMPLETIONS, status="401"),
            "latency count": delta("sgp_infra_api_request_duration_seconds_count", method="POST", route=COMPLETIONS),
            "model 200": delta("sgp_infra_model_requests_total", model=model, operation="completion", code="200"),
            "upstream latency count": delta("sgp_infra_model_upstream_latency_seconds_count", model=model),
        }
        assert got == {"api 200": 3, "api 422": 1, "api 401": 1, "latency count": 5, "model 200": 3,
                       "upstream latency count": 3}, f"express={api.express}: {got}"
        assert f'sgp_infra_model_requests_in_flight{{model="{model}"}} 0.0' in after
        deltas.append(got)
    assert deltas[0] == deltas[1]


def test_in_flight_gauge_counts_a_call_waiting_for_its_backend(servers: Servers, api: Api) -> None:
    """Held by the hang backend: in flight 1 while waiting (the gauge KEDA reads), 0 once the client left."""
    hang = servers.hang
    seen = hang.requests
    with Raw(api.url) as raw:
        raw.send(post("/v4/models/hang/completions", {"prompt": "x"}))
        assert wait_for(lambda: hang.requests == seen + 1, 10)
        assert api.in_flight("hang") == 1
        assert f'sgp_infra_model_requests_in_flight{{model="{CATALOG.models["hang"].object_name}"}} 1.0' \
            in api.metrics()
    assert wait_for(lambda: api.in_flight("hang") == 0, 5)


# === 5. HTTP mechanics over raw sockets ==========================================================


def _mixed_requests() -> list[tuple[bytes, Callable[[RawResponse], None]]]:
    def completion(text: str) -> Callable[[RawResponse], None]:
        def check(r: RawResponse) -> None:
            assert r.status == 200 and r.json()["completions"] == [[text, [GREETING + text]]], r
        return check

    def status(code: int) -> Callable[[RawResponse], None]:
        def check(r: RawResponse) -> None:
            assert r.status == code, r
        return check

    def streamed(r: RawResponse) -> None:
        assert r.status == 200 and r.header("transfer-encoding") == "chunked"
        assert "".join(sse_texts(r.body, lambda e: e["completions"][0][1][0])) == GREETING + "s t"

    return [
        (post("/v4/models/sgp-echo/completions", {"prompt": "first"}), completion("first")),
        (request_bytes("GET", "/healthz"), status(200)),
        (post("/v4/models/missing/completions", {"prompt": "x"}), status(404)),
        (post("/v4/models/sgp-echo/completions", {"prompt": "s t", "stream": True}), streamed),
        (post("/v5/completions", {"model": "sgp-echo", "prompt": "v5"}), status(200)),
        (post("/v5/inference", {"model": "launch/v5-generic", "args": {"prompt": "p"}}), status(200)),
        (post("/v4/models/sgp-echo/completions", {"prompt": "last"}), completion("last")),
    ]


def test_keep_alive_serves_many_requests_on_one_connection(api: Api) -> None:
    with Raw(api.url) as raw:
        for _round in range(2):
            for data, check in _mixed_requests():
                raw.send(data)
                r = raw.response()
                check(r)
                assert r.header("connection") is None, "a keep-alive answer must not close"
        assert not raw.closed_by_server(0.3)


@pytest.mark.parametrize("express", [True, False], ids=["express", "plain"])
def test_keep_alive_timeout_closes_idle_connections_only(servers: Servers, express: bool) -> None:
    """uvicorn's rule, kept by the lane's one-timer-per-idle-spell: an idle connection closes
    ``timeout_keep_alive`` after its last response; one that keeps sending requests stays open."""
    app = make_app(CATALOG, {"sgp-echo": servers.express.app.state.inference.base_url(CATALOG.models["sgp-echo"])})
    with running(app, express=express, timeout_keep_alive=0.6) as url:
        with Raw(url) as busy, Raw(url) as idle:
            idle.send(post("/v4/models/sgp-echo/completions", {"prompt": "once"}))
            assert idle.response().status == 200
            started = time.monotonic()
            while time.monotonic() - started < 1.5:  # well past the timeout, a request every 0.2 s
                busy.send(post("/v4/models/sgp-echo/completions", {"prompt": "again"}))
                assert busy.response().status == 200, "a busy connection was closed"
                time.sleep(0.2)
            assert _closed_within(idle, 0.1), "an idle connection outlived the keep-alive timeout"
            busy.send(post("/v4/models/sgp-echo/completions", {"prompt": "still"}))
            assert busy.response().json()["completions"] == [["still", [GREETING + "still"]]]
            assert not _closed_within(busy, 0.3), "closed before its timeout"
            assert _closed_within(busy, 2), "the last idle spell did not end in a close"


def _closed_within(raw: Raw, seconds: float) -> bool:
    """Whether the server closes ``raw``'s connection within ``seconds`` (nothing else is expected on it)."""
    ready, _, _ = select.select([raw.sock], [], [], seconds)
    if not ready:
        return False
    try:
        return raw.sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def test_pipelined_requests_are_all_answered_in_order(api: Api) -> None:
    requests = _mixed_requests()
    with Raw(api.url) as raw:
        raw.send(b"".join(data for data, _check in requests))  # one write: pipelined
        for _data, check in requests:
            check(raw.response())
        # two typed calls back to back, in one segment
        raw.send(post("/v4/models/sgp-echo/completions", {"prompt": "p1"})
                 + post("/v4/models/cohere-embed/embeddings", {"texts": ["p2"]}))
        first, second = raw.response(), raw.response()
    assert first.json()["completions"] == [["p1", [GREETING + "p1"]]]
    assert second.json()["embeddings"] == [embed("p2")]


def test_connection_close_from_the_client(servers: Servers) -> None:
    answers = []
    for api in servers.both():
        with Raw(api.url) as raw:
            raw.send(post("/v4/models/sgp-echo/completions", {"prompt": "bye"}, headers=[("connection", "close")])
                     + post("/v4/models/sgp-echo/completions", {"prompt": "never"}))  # after close: ignored
            r = raw.response()
            assert r.status == 200 and r.json()["completions"] == [["bye", [GREETING + "bye"]]]
            assert r.header("connection") == "close"
            assert raw.closed_by_server(5), f"express={api.express}: the connection stayed open after close"
        answers.append(r.comparable())
    assert answers[0] == answers[1]


@pytest.mark.parametrize("extra", [[], [("connection", "keep-alive")]], ids=["plain", "keep-alive-asked"])
def test_http_1_0_request_is_answered_and_closed(servers: Servers, extra: list[tuple[str, str]]) -> None:
    answers = []
    for api in servers.both():
        for data in (post("/v4/models/sgp-echo/completions", {"prompt": "old"}, version="1.0", headers=extra),
                     post("/v4/models/missing/completions", {"prompt": "old"}, version="1.0", headers=extra)):
            with Raw(api.url) as raw:
                raw.send(data)
                r = raw.response()
                assert r.status in (200, 404) and r.header("connection") == "close"
                assert raw.closed_by_server(5), f"express={api.express}: HTTP/1.0 connection left open"
                answers.append(r.comparable())
    assert answers[0][1] == 200 and json.loads(answers[0][3])["completions"] == [["old", [GREETING + "old"]]]
    assert answers[1][1] == 404
    assert answers[:2] == answers[2:]


# === 6. client disconnect =======================================================================


LARGE_PROMPT = "x" * (100 * 1024)  # over uvicorn's 64 KiB read high-water mark, under MAX_BODY


@pytest.mark.parametrize("size", ["small", "large"])
def test_client_disconnect_cancels_the_backend_request(servers: Servers, api: Api, size: str) -> None:
    # "large": a body over uvicorn's 64 KiB read limit, after which uvicorn pauses reading until asked
    hang = servers.hang
    model = CATALOG.models["hang"].object_name
    prompt = "x" if size == "small" else LARGE_PROMPT
    before = api.metrics()
    requests, dropped = hang.requests, hang.dropped
    try:
        with Raw(api.url) as raw:
            raw.send(post("/v4/models/hang/completions", {"prompt": prompt}))
            assert wait_for(lambda: hang.requests == requests + 1, 10), "the backend never got the request"
            assert api.in_flight("hang") == 1
        # the client is gone
        left = time.monotonic()
        gone = wait_for(lambda: api.in_flight("hang") == 0, 4)
        assert gone, (f"express={api.express}, {size} body: the model's in-flight count is still "
                      f"{api.in_flight('hang')} {time.monotonic() - left:.1f} s after the client disconnected")
        assert wait_for(lambda: hang.dropped == dropped + 1, 5), "the backend request was not cancelled"
        assert_counted_as_client_gone(api, before, model)
        # the API still answers, on a new connection
        r = httpx.post(f"{api.url}/v4/models/sgp-echo/completions", json={"prompt": "still"}, headers=HEADERS,
                       timeout=30)
        assert r.status_code == 200 and r.json()["completions"] == [["still", [GREETING + "still"]]]
        assert httpx.get(f"{api.url}/healthz", timeout=10).status_code == 200
    finally:
        # leave nothing in flight for the next test (the read timeout of ``hang`` is 8 s)
        wait_for(lambda: api.in_flight("hang") == 0, 12)


def test_client_that_leaves_mid_body_reaches_no_backend(servers: Servers, api: Api) -> None:
    requests = servers.hang.requests
    before = api.metrics()
    with Raw(api.url) as raw:
        body = json.dumps({"prompt": "partial"}).encode()
        raw.send(request_bytes("POST", "/v4/models/hang/completions", body)[:-5])  # 5 bytes short
        time.sleep(0.2)
    assert api.in_flight("hang") == 0, "a request whose body never completed was admitted"
    assert servers.hang.requests == requests, "a request whose body never completed reached the backend"

    def counted(status: str) -> float:
        return sample(api.metrics(), "sgp_infra_api_requests_total", route=COMPLETIONS, status=status) \
            - sample(before, "sgp_infra_api_requests_total", route=COMPLETIONS, status=status)

    # Both paths count it as a 499 (the client left), never as a 500 with a logged traceback.
    assert wait_for(lambda: counted("499") == 1, 5), f"express={api.express}: no 499 counted"
    assert counted("500") == 0
    r = httpx.post(f"{api.url}/v4/models/sgp-echo/completions", json={"prompt": "ok"}, headers=HEADERS, timeout=30)
    assert r.status_code == 200


def test_account_selection_that_is_allowed_is_the_same(servers: Servers) -> None:
    headers = {**HEADERS, "x-selected-account-id": ACCOUNT}
    a, b = on_both(servers, "POST", "/v4/models/sgp-echo/completions", json={"prompt": "mine"}, headers=headers)
    assert a.status_code == 200
    assert_same(a, b, "selected own account")


# === flights: calls sent on a warm connection, finished by its callback ============================

SCRIPTED = "/v4/models/scripted/completions"


@pytest.fixture
def flights(monkeypatch: pytest.MonkeyPatch) -> list[Optional[BaseException]]:
    """How each flight of the express server ended (its connection's callback), in order."""
    ended: list[Optional[BaseException]] = []
    landed = express.Flight.landed

    def counted(self: express.Flight, error: Optional[BaseException]) -> None:
        ended.append(error)
        landed(self, error)

    monkeypatch.setattr(express.Flight, "landed", counted)
    return ended


WARM = [
    ("a 2xx answer", [Script.ok("all good")], 200),
    ("503, retried, then 200", [Script.answer(503, b"busy"), Script.ok("second try")], 200),
    ("500", [Script.answer(500, b'{"detail": "CUDA OOM"}')], 502),
    ("422, passed on", [Script.answer(422, b'{"detail": "prompt too long"}')], 422),
    ("a body that is not JSON", [Script.answer(200, b"<html>oops</html>")], 502),
    ("a body of the wrong shape", [Script.answer(200, b'{"completions": 3}')], 502),
    ("a reset before answering", [Script.reset], 502),
    ("a body over the read-ahead buffer", [Script.ok("y" * (300 * 1024))], 200),
]


@pytest.mark.parametrize("what, steps, status", WARM, ids=[w[0] for w in WARM])
def test_a_call_on_a_warm_connection_is_answered_as_the_async_path_answers_it(
        servers: Servers, flights: list[Optional[BaseException]], what: str, steps: list[Step], status: int) -> None:
    answers = []
    for api in servers.both():
        servers.script.steps.extend([Script.ok("warm-up"), *steps])
        with httpx.Client(base_url=api.url, headers=HEADERS, timeout=30) as client:
            assert client.post(SCRIPTED, json={"prompt": "p"}).status_code == 200
            before = len(flights)
            answers.append(client.post(SCRIPTED, json={"prompt": "p"}))
            if api.express:
                assert len(flights) > before, f"{what}: the express server sent the call without a flight"
    assert not servers.script.steps
    assert answers[0].status_code == status, answers[0].text
    assert_same(answers[0], answers[1], what)


def test_a_read_timeout_on_a_warm_connection_is_504_as_on_the_async_path(
        servers: Servers, flights: list[Optional[BaseException]]) -> None:
    script = servers.script
    answers = []
    for api in servers.both():
        script.steps.extend([Script.ok("warm-up"), script.hang])
        with httpx.Client(base_url=api.url, headers=HEADERS, timeout=30) as client:
            assert client.post(SCRIPTED, json={"prompt": "p"}).status_code == 200
            answers.append(client.post(SCRIPTED, json={"prompt": "p"}))  # the model's read timeout is 1 s
    assert answers[0].status_code == 504 and "did not answer within 1 s" in answers[0].text
    assert_same(answers[0], answers[1], "read timeout")
    assert any(isinstance(e, ReadTimeout) for e in flights), "the timeout did not end a flight"
    assert wait_for(lambda: script.dropped == script.hanging, 5), "a timed-out backend call was not dropped"


def test_a_client_leaving_during_a_flight_drops_the_backend_call(
        servers: Servers, flights: list[Optional[BaseException]]) -> None:
    api, script = servers.express, servers.script
    model = CATALOG.models["scripted"].object_name
    script.steps.extend([Script.ok("warm-up"), script.hang])
    hanging, dropped = script.hanging, script.dropped
    with httpx.Client(base_url=api.url, headers=HEADERS, timeout=30) as client:
        assert client.post(SCRIPTED, json={"prompt": "p"}).status_code == 200
    before = api.metrics()
    ended = len(flights)
    with Raw(api.url) as raw:
        raw.send(post(SCRIPTED, {"prompt": "p"}))
        assert wait_for(lambda: script.hanging == hanging + 1, 10), "the backend never got the request"
        assert api.in_flight("scripted") == 1
    assert wait_for(lambda: api.in_flight("scripted") == 0, 4), "still in flight after the client left"
    assert wait_for(lambda: script.dropped == dropped + 1, 4), "the backend call was not dropped"
    assert len(flights) == ended, "the flight's callback ran for a call the client had left"
    assert_counted_as_client_gone(api, before, model)
