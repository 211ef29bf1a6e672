"""Behaviour under trouble: every backend fault, streaming without buffering,
cancellation, cold-start hold and timeout, and the in-flight cap.

No assertion depends on timing: streams are gated by events, holds are
released by starting the backend, and timeouts are only checked for their
outcome.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import httpx
import pytest

from sgp_infra.api.inference import InferenceSettings
from sgp_infra.api.status import ModelStatus, StaticStatus
from sgp_infra.demo_model import DemoModel
from test_inference_helpers import (HEADERS, FaultServer, free_port, make_app, make_catalog, read_request,
                                    serve)

CATALOG = make_catalog()
#: sgp-echo with a short read timeout (the fault tests) or a short cold-start hold.
SHORT_READ = make_catalog(inference={"sgp-echo": {"read_timeout_seconds": 0.5}})
SHORT_HOLD = make_catalog(inference={"sgp-echo": {"cold_start_hold_seconds": 0.3}})
FAST = dict(retries=2, backoff=0.01, wake_poll_interval=0.05)


def settings(**overrides: Any) -> InferenceSettings:
    return InferenceSettings(**{**FAST, **overrides})


@contextmanager
def api(backends: dict[str, str], *, status: Optional[Any] = None, catalog: Any = CATALOG,
        **kw: Any) -> Iterator[tuple[httpx.Client, Any]]:
    app = make_app(catalog, backends, status=status, settings=settings(**kw))
    with serve(app) as url, httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
        yield client, app


def assert_error_shape(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"status", "error", "detail"} and body["status"] == status
    assert "Traceback" not in r.text
    return body


def in_flight(app: Any, model: str = "sgp-echo") -> int:
    return app.state.inference.in_flight.get(CATALOG.models[model].object_name, 0)


# --- faults -------------------------------------------------------------------------------


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"this is not HTTP at all\r\n\r\n")
    await writer.drain()


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.transport.abort()


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await asyncio.sleep(60)


def _http(status: int, body: bytes, content_type: bytes = b"application/json", extra: bytes = b"") -> Any:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n"
                         % (status, content_type, len(body), extra) + body)
            await writer.drain()
    return behaviour


async def _huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(64):  # 4 MiB, over the 1 MiB limit set below
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
    writer.write(b"0\r\n\r\n")


@pytest.mark.parametrize("behaviour, status, kind", [
    (_garbage, 502, "protocol"),
    (_reset, 502, "protocol"),
    (_hang, 504, "read_timeout"),
    (_huge, 502, "too_large"),
    (_http(200, b"<html>oops</html>", b"text/html"), 502, "bad_response"),
    (_http(200, b'{"unexpected": true}'), 502, "bad_response"),
    (_http(500, b'{"detail": "CUDA out of memory"}'), 502, "upstream_5xx"),
    (_http(404, b"no such route"), 502, "upstream_4xx"),
    (_http(400, b'{"error": "prompt too long"}'), 400, "upstream_4xx"),
])
def test_backend_faults_become_json_errors(behaviour: Any, status: int, kind: str) -> None:
    with FaultServer(behaviour) as url, api({"sgp-echo": url}, max_response_bytes=1024 * 1024,
                                            catalog=SHORT_READ) as (client, app):
        r = client.post("/v4/models/sgp-echo/completions", json={"prompt": "x"})
        body = assert_error_shape(r, status)
        assert "sgp-echo" in body["detail"]
        if status == 400:
            assert "prompt too long" in body["detail"]
        assert in_flight(app) == 0
        metrics = client.get("/metrics").text
        assert f'sgp_infra_model_errors_total{{kind="{kind}",model="sgp-echo"}} 1.0' in metrics
        # the API is still fine afterwards
        assert client.get("/healthz").status_code == 200


def test_503_before_any_byte_is_retried() -> None:
    calls = {"n": 0}

    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            calls["n"] += 1
            if calls["n"] <= 2:
                body = b'{"detail": "warming up"}'
                writer.write(b"HTTP/1.1 503 X\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            else:
                body = b'{"completions": [["x", ["ok"]]], "finish_reason": "stop"}'
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))
            await writer.drain()

    with FaultServer(flaky) as url, api({"sgp-echo": url}) as (client, _app):
        r = client.post("/v4/models/sgp-echo/completions", json={"prompt": "x"})
        assert r.status_code == 200 and r.json()["completions"] == [["x", ["ok"]]]
    assert calls["n"] == 3


def test_persistent_503_is_503_with_retry_after() -> None:
    with FaultServer(_http(503, b"busy", extra=b"retry-after: 7\r\n")) as url, \
            api({"sgp-echo": url}) as (client, _app):
        r = client.post("/v4/models/sgp-echo/completions", json={"prompt": "x"})
        assert_error_shape(r, 503)
        assert r.headers["retry-after"] == "7"


def test_connection_refused_is_retried_then_503_with_retry_after() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with api({"sgp-echo": dead}, catalog=SHORT_HOLD) as (client, app):
        r = client.post("/v4/models/sgp-echo/completions", json={"prompt": "x"})
        body = assert_error_shape(r, 503)
        assert "no ready pods" in body["detail"]
        assert 'kind="cold_start_hold",model="sgp-echo"} 1.0' in client.get("/metrics").text
        assert r.headers["retry-after"] == "5"
        assert in_flight(app) == 0


def test_failed_model_is_503_at_once() -> None:
    status = StaticStatus(ModelStatus("failed", "pod x: CrashLoopBackOff"))
    with api({}, status=status) as (client, _app):
        r = client.post("/v4/models/sgp-echo/completions", json={"prompt": "x"})
        assert "CrashLoopBackOff" in assert_error_shape(r, 503)["detail"]
        assert "retry-after" in r.headers


# --- streaming ------------------------------------------------------------------------------


def test_chunks_arrive_before_the_backend_finishes() -> None:
    gate = threading.Event()
    with serve(DemoModel("VLLM", stream_gate=gate)) as backend, api({"vllm-chat": backend}) as (client, _app):
        body = {"prompt": "one two three", "chat_history": [], "stream": True}
        with client.stream("POST", "/v4/models/vllm-chat/chat-completions", json=body) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            # The backend is still holding the rest of its stream: this chunk was not buffered.
            assert not gate.is_set()
            gate.set()
            rest = [line for line in lines if line.startswith("data: ")]
        assert first and len(rest) >= 3


def test_mid_stream_failure_is_an_sse_error_event() -> None:
    cut_now = threading.Event()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        event = b'data: {"completions": [["x", ["partial "]]], "finish_reason": null}\n\n'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                     + b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.get_running_loop().run_in_executor(None, cut_now.wait, 30)
        writer.transport.abort()  # reset in the middle of the stream

    with FaultServer(cut) as url, api({"sgp-echo": url}) as (client, app):
        with client.stream("POST", "/v4/models/sgp-echo/completions", json={"prompt": "x", "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert "partial" in next(line for line in lines if line.startswith("data: "))
            cut_now.set()
            rest = "\n".join(lines)
        assert "event: error" in rest and "broke the connection" in rest and "Traceback" not in rest
        assert in_flight(app) == 0


def test_client_disconnect_cancels_the_upstream_request() -> None:
    closed = threading.Event()
    started = threading.Event()

    async def slow_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        event = b'data: {"completions": [["x", ["tick "]]], "finish_reason": null}\n\n'
        try:
            for _ in range(600):
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                started.set()
                await asyncio.sleep(0.05)
                if reader.at_eof():
                    break
        except ConnectionError:
            pass
        closed.set()

    with FaultServer(slow_stream) as url, api({"sgp-echo": url}) as (client, app):
        with client.stream("POST", "/v4/models/sgp-echo/completions", json={"prompt": "x", "stream": True}) as r:
            next(line for line in r.iter_lines() if line.startswith("data: "))
        # leaving the block closed our connection: the API must drop the upstream one
        assert closed.wait(20), "the upstream stream was not cancelled"
        deadline = time.monotonic() + 20
        while in_flight(app) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert in_flight(app) == 0


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(client.get("/metrics").text)
               for s in family.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_client_disconnect_cancels_a_non_streaming_request_and_counts_499() -> None:
    closed = threading.Event()
    received = threading.Event()

    async def hang_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        received.set()
        await reader.read()  # returns when the API closes the upstream connection
        closed.set()

    with FaultServer(hang_until_eof) as url, api({"sgp-echo": url}) as (client, app):
        def call() -> None:
            with pytest.raises(httpx.ReadTimeout):
                client.post("/v4/models/sgp-echo/completions", json={"prompt": "x"}, timeout=1.0)

        caller = threading.Thread(target=call)
        caller.start()
        assert received.wait(20)
        # waiting for its backend, the call is in flight: the gauge KEDA reads
        assert metric(client, "sgp_infra_model_requests_in_flight", model="sgp-echo") == 1
        caller.join(20)
        assert closed.wait(20), "the upstream request was not cancelled"
        deadline = time.monotonic() + 20
        while in_flight(app) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert metric(client, "sgp_infra_model_requests_in_flight", model="sgp-echo") == 0
        assert metric(client, "sgp_infra_model_requests_total", model="sgp-echo", code="499") == 1
        assert metric(client, "sgp_infra_model_errors_total", model="sgp-echo", kind="client_disconnect") == 1
        assert metric(client, "sgp_infra_api_requests_total", status="499",
                      route="/v4/models/{model_deployment_id}/completions") == 1
        assert metric(client, "sgp_infra_model_errors_total", model="sgp-echo", kind="read_timeout") == 0


def test_a_client_that_leaves_mid_body_reaches_no_backend() -> None:
    reached = threading.Event()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        reached.set()

    with FaultServer(record) as url, api({"sgp-echo": url}) as (client, app):
        host, port = client.base_url.host, client.base_url.port
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"POST /v4/models/sgp-echo/completions HTTP/1.1\r\nhost: x\r\nx-api-key: %s\r\n"
                         b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"prompt\": "
                         % HEADERS["x-api-key"].encode())
            time.sleep(0.2)
        deadline = time.monotonic() + 5
        while metric(client, "sgp_infra_api_requests_total", status="499") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(client, "sgp_infra_api_requests_total", status="499") == 1
        assert not reached.is_set() and in_flight(app) == 0


# --- scale from zero ---------------------------------------------------------------------------


SCALED_TO_ZERO = StaticStatus(ModelStatus("ready", "scaled to zero; the first request starts a worker"))


@contextmanager
def demo_on(port: int) -> Iterator[None]:
    """A demo SGP model listening on ``port`` (the model "wakes up")."""
    import uvicorn

    config = uvicorn.Config(DemoModel("SGP"), host="127.0.0.1", port=port, log_level="critical", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


def test_cold_start_holds_requests_and_waiters_share_one_wake_up() -> None:
    port = free_port()
    backend_url = f"http://127.0.0.1:{port}"
    with api({"sgp-echo": backend_url}, status=SCALED_TO_ZERO) as (client, app):
        results: list[httpx.Response] = []

        def call(n: int) -> None:
            results.append(client.post("/v4/models/sgp-echo/completions", json={"prompt": f"p{n}"}))

        threads = [threading.Thread(target=call, args=(n,)) for n in range(5)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while in_flight(app) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert in_flight(app) == 5  # all held, all counted: the gauge KEDA reads
        metrics = client.get("/metrics").text
        assert 'sgp_infra_model_requests_in_flight{model="sgp-echo"} 5.0' in metrics
        assert not results
        with demo_on(port):
            for t in threads:
                t.join(30)
            assert [r.status_code for r in results] == [200] * 5
            metrics = client.get("/metrics").text
            assert 'sgp_infra_model_wakeups_total{model="sgp-echo"} 1.0' in metrics
            assert 'sgp_infra_model_cold_start_wait_seconds_count{model="sgp-echo"} 5.0' in metrics
            assert 'sgp_infra_model_requests_in_flight{model="sgp-echo"} 0.0' in metrics


def test_a_hold_ends_with_503_while_the_wake_up_goes_on_and_a_retry_joins_it() -> None:
    """The hold (0.3 s here, 50 s by default) ends before the wake-up: 503 with Retry-After; the poll
    goes on without any waiter, and the client's retry is held by the same wake-up, then answered."""
    port = free_port()
    key = CATALOG.models["sgp-echo"].object_name
    with api({"sgp-echo": f"http://127.0.0.1:{port}"}, status=SCALED_TO_ZERO, catalog=SHORT_HOLD,
             cold_start_margin=60) as (client, app):
        r = client.post("/v4/models/sgp-echo/completions", json={"prompt": "x"})
        body = assert_error_shape(r, 503)
        assert "starting" in body["detail"] and r.headers["retry-after"] == "5"
        waker = app.state.inference.waker
        assert waker.polling(key), "the wake-up stopped with its only waiter"
        assert in_flight(app) == 0  # a held request counts only while it is held
        r = client.post("/v4/models/sgp-echo/completions", json={"prompt": "x"})  # held again, joins the poll
        assert_error_shape(r, 503)
        with demo_on(port):
            deadline = time.monotonic() + 20
            while not waker.recently_ok(key) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert waker.recently_ok(key), "the wake-up did not see the model come up without a waiter"
            r = client.post("/v4/models/sgp-echo/completions", json={"prompt": "x"})
            assert r.status_code == 200, r.text
        metrics = client.get("/metrics").text
        assert 'sgp_infra_model_wakeups_total{model="sgp-echo"} 1.0' in metrics
        assert 'sgp_infra_model_errors_total{kind="cold_start_hold",model="sgp-echo"} 2.0' in metrics


def test_cold_start_timeout_is_503_with_retry_after() -> None:
    """The wake-up's budget (readiness delay 1 s + margin) spent before the hold: the model is not coming."""
    dead = f"http://127.0.0.1:{free_port()}"
    with api({"sgp-echo": dead}, status=SCALED_TO_ZERO, cold_start_margin=0.2) as (client, app):
        r = client.post("/v4/models/sgp-echo/completions", json={"prompt": "x"})
        assert "did not become ready within 1.2 s" in assert_error_shape(r, 503)["detail"]
        assert r.headers["retry-after"] == "5"
        assert in_flight(app) == 0
        assert 'kind="cold_start_timeout",model="sgp-echo"} 1.0' in client.get("/metrics").text
        assert not app.state.inference.waker.polling(CATALOG.models["sgp-echo"].object_name)


# --- in-flight cap ---------------------------------------------------------------------------------


def test_requests_beyond_per_worker_times_max_workers_get_429() -> None:
    release = threading.Event()

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
        body = b'{"completions": [["x", ["ok"]]], "finish_reason": "stop"}'
        # FaultServer closes each connection after its handler: say so, or the API may send the
        # last request on a connection as it closes (a 502: a proxy does not resend a POST).
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    with FaultServer(held) as url, api({"tiny": url}) as (client, app):
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(
            client.post("/v4/models/tiny/completions", json={"prompt": "x"}).status_code)) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while in_flight(app, "tiny") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = client.post("/v4/models/tiny/completions", json={"prompt": "x"})
        body = assert_error_shape(r, 429)
        assert "per_worker 1 x max_workers 2" in body["detail"] and r.headers["retry-after"] == "1"
        release.set()
        for t in threads:
            t.join(30)
        assert results == [200, 200]
        assert client.post("/v4/models/tiny/completions", json={"prompt": "x"}).status_code == 200


def test_stream_closes_the_backend_response_when_the_client_leaves_before_the_first_chunk() -> None:
    """The chunk generator never starts, so only the call's own clean-up can close the backend response."""
    from sgp_infra.api.inference.call import InferenceCall, Streamed

    class FakeAnswer:
        closed = 0

        def close(self) -> None:
            FakeAnswer.closed += 1

    started = False

    async def chunks() -> Any:
        nonlocal started
        started = True
        yield b"data: {}\n\n"

    async def scenario() -> tuple[float, float]:
        app = make_app(CATALOG, {})
        gateway = app.state.inference
        model = CATALOG.models["sgp-echo"]

        async def work() -> Streamed:
            return Streamed(FakeAnswer(), chunks(), "text/event-stream")  # type: ignore[arg-type]

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(0.05)  # the work answers first, then the client is gone
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await asyncio.Event().wait()  # the client is gone: nothing is ever written

        await InferenceCall(gateway, model, "completion", work)({"type": "http"}, receive, send)
        registry = app.state.metrics.registry
        counted = registry.get_sample_value("sgp_infra_model_requests_total",
                                            {"model": model.object_name, "operation": "completion", "code": "499"})
        gone = registry.get_sample_value("sgp_infra_model_errors_total",
                                         {"model": model.object_name, "kind": "client_disconnect"})
        return counted or 0.0, gone or 0.0

    counted, gone = asyncio.run(scenario())
    assert not started
    assert FakeAnswer.closed == 1
    assert (counted, gone) == (1, 1)
