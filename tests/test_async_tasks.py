"""ASYNC endpoints end to end, on a real nats-server (JetStream, file storage) on 127.0.0.1.

One server per module on free ports with a temporary store; each test uses
its own stack namespace, so its stream, consumers and bucket are its own.
Forwarders run as real processes (``python -m sgp_infra forwarder``), so
SIGKILL and SIGTERM behave as in a pod.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import httpx
import nats
import pytest
from nats.js.errors import NoKeysError

from api_helpers import running
from async_helpers import (
    API_KEYS, DEV_KEY, OTHER_KEY, Backend, async_raw, forwarders, jsz, poll_until_final, start_forwarder,
    wait_for, write_stack,
)
from sgp_infra.api import create_app
from sgp_infra.api.tasks import enqueue_and_wait, task_response
from sgp_infra.catalog import build_catalog
from sgp_infra.plan.nats import task_layout
from sgp_infra.tasks.local import LocalNats
from sgp_infra.tasks.records import TaskRecord

pytestmark = pytest.mark.timeout(120)

_namespaces = itertools.count()


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalNats]:
    server = LocalNats().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    be = Backend().start()
    try:
        yield be
    finally:
        be.stop()


class Stack:
    """One test's catalogue: raw config, its stack file (for forwarders) and the built catalogue."""

    def __init__(self, tmp: Path, **kw: Any) -> None:
        self.raw = async_raw(namespace=f"t{next(_namespaces)}", **kw)
        self.path = write_stack(tmp, self.raw)
        self.catalog = build_catalog(self.raw)
        self.layout = task_layout(self.catalog)

    def app(self, nats_url: str) -> Any:
        return create_app(self.catalog, api_keys=API_KEYS, nats_url=nats_url)


def post(client: httpx.Client, args: dict[str, Any], key: str = DEV_KEY, model: str = "jobs",
         **extra: Any) -> httpx.Response:
    return client.post("/v1/async-tasks", params={"model_endpoint_id": model}, json={"args": args, **extra},
                       headers={"x-api-key": key})


def wait_api_ready(app: Any) -> None:
    wait_for(lambda: app.state.tasks.broker.ready, what="the API's broker connection")


def test_enqueue_poll_result_and_visibility(tmp_path: Path, broker: LocalNats, backend: Backend) -> None:
    stack = Stack(tmp_path)
    app = stack.app(broker.url)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client, \
            forwarders(stack.path, backend.url, broker.url):
        wait_api_ready(app)
        created = post(client, {"echo": "hello"})
        assert created.status_code == 200, created.text
        task_id = created.json()["task_id"]
        assert list(created.json()) == ["task_id"]
        body = poll_until_final(client, task_id)
        assert body == {"task_id": task_id, "status": "SUCCESS", "result": {"echo": "hello"}, "traceback": None,
                        "status_code": 200}
        # Another account's key: the task and the model are "not found", never "forbidden".
        other = client.get(f"/v1/async-tasks/{task_id}", headers={"x-api-key": OTHER_KEY})
        assert other.status_code == 404 and other.json()["error"] == "not_found"
        assert post(client, {"echo": "x"}, key=OTHER_KEY).status_code == 404
        unknown = client.get("/v1/async-tasks/00000000-0000-4000-8000-000000000000", headers={"x-api-key": DEV_KEY})
        assert unknown.status_code == 404
        assert client.get("/v1/async-tasks/not-a-task", headers={"x-api-key": DEV_KEY}).status_code == 404
        # Wrong model type, missing input, a bad callback URL: clear 4xx JSON errors.
        assert post(client, {"echo": "x"}, model="sync-model").status_code == 400
        missing = client.post("/v1/async-tasks", params={"model_endpoint_id": "jobs"}, json={},
                              headers={"x-api-key": DEV_KEY})
        assert missing.status_code == 422 and "args" in missing.json()["detail"]
        assert post(client, {"echo": "x"}, callback_url="ftp://x").status_code == 422
        assert client.post("/v1/async-tasks", params={"model_endpoint_id": "jobs"},
                           json={"args": {}}).status_code == 401
        metrics = client.get("/metrics").text
        assert "sgp_infra_async_queue_depth" in metrics


def test_states_pending_from_the_queue_started_while_running_then_success(
        tmp_path: Path, broker: LocalNats, backend: Backend) -> None:
    """No record is written to queue a task: a queued task reads PENDING from its message (on any API
    process, for its account only); a task still running after a moment reads STARTED; then SUCCESS."""
    stack = Stack(tmp_path)
    app, other_api = stack.app(broker.url), stack.app(broker.url)
    with running(app) as url, running(other_api) as other_url, \
            httpx.Client(base_url=url, timeout=30) as client, httpx.Client(base_url=other_url, timeout=30) as other:
        wait_api_ready(app)
        wait_api_ready(other_api)
        task_id = post(client, {"echo": "slow", "sleep": 1.5}).json()["task_id"]
        # No forwarder yet: the task is only its message in the queue.
        bucket = asyncio.run(_bucket_keys(broker.url, stack.layout.bucket))
        assert task_id not in bucket
        for api in (client, other):  # the API that queued it, and one that never saw it
            queued = api.get(f"/v1/async-tasks/{task_id}", headers={"x-api-key": DEV_KEY})
            assert queued.status_code == 200 and queued.json()["status"] == "PENDING", queued.text
            assert api.get(f"/v1/async-tasks/{task_id}", headers={"x-api-key": OTHER_KEY}).status_code == 404
        seen: list[str] = []
        with forwarders(stack.path, backend.url, broker.url):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status = other.get(f"/v1/async-tasks/{task_id}", headers={"x-api-key": DEV_KEY}).json()["status"]
                if not seen or seen[-1] != status:
                    seen.append(status)
                if status in ("SUCCESS", "FAILURE"):
                    break
                time.sleep(0.05)
        assert seen[-2:] == ["STARTED", "SUCCESS"] and set(seen) <= {"PENDING", "STARTED", "SUCCESS"}
        assert backend.calls["slow"] == 1


async def _bucket_keys(url: str, bucket: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(bucket)
        try:
            return list(await kv.keys())
        except NoKeysError:
            return []
    finally:
        await nc.close()


def test_callback_url_called_once_with_the_final_state(tmp_path: Path, broker: LocalNats, backend: Backend) -> None:
    stack = Stack(tmp_path)
    received: list[dict[str, Any]] = []
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def hook(request: Request) -> JSONResponse:
        received.append(await request.json())
        return JSONResponse({})

    receiver = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    app = stack.app(broker.url)
    with running(receiver) as hook_url, running(app) as url, \
            httpx.Client(base_url=url, timeout=30) as client, forwarders(stack.path, backend.url, broker.url):
        wait_api_ready(app)
        task_id = post(client, {"echo": "cb"}, callback_url=f"{hook_url}/hook").json()["task_id"]
        poll_until_final(client, task_id)
        wait_for(lambda: len(received) == 1, what="the callback")
        time.sleep(0.3)
        assert received == [{"task_id": task_id, "status": "SUCCESS", "result": {"echo": "cb"}, "traceback": None,
                             "status_code": 200}]


def test_enqueue_and_wait_hook(tmp_path: Path, broker: LocalNats, backend: Backend) -> None:
    """The hook the v4/v5 inference routes call: the answer within the timeout, else the task id to poll."""
    stack = Stack(tmp_path)
    app = stack.app(broker.url)
    model = stack.catalog.models["jobs"]

    async def call(args: bytes, timeout: float) -> Any:
        return await enqueue_and_wait(app, model, args, timeout)

    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_api_ready(app)
        # Without a forwarder nothing answers: the outcome is the task id, a 202 to poll.
        pending = _in_app_loop(app, call(b'{"echo": "later"}', 0.3))
        assert not pending.done and pending.status == "PENDING"
        response = task_response(pending)
        assert response is not None and response.status_code == 202
        with forwarders(stack.path, backend.url, broker.url):
            done = _in_app_loop(app, call(b'{"echo": "now"}', 20))
            assert done.done and done.record.status == "SUCCESS" and done.record.result == {"echo": "now"}
            assert task_response(done) is None  # the route answers with the model's JSON itself
            failed = _in_app_loop(app, call(b'{"echo": "bad", "fail": 400}', 20))
            assert failed.record.status == "FAILURE"
            answer = task_response(failed)
            assert answer is not None and answer.status_code == 502
            # The timed-out task was not lost: the forwarder ran it and it can be polled.
            assert poll_until_final(client, pending.task_id)["result"] == {"echo": "later"}


def _in_app_loop(app: Any, coro: Any) -> Any:
    """Run ``coro`` on the loop serving ``app`` (where its NATS connection lives)."""
    return asyncio.run_coroutine_threadsafe(coro, app.state.tasks.loop).result(timeout=60)


def test_503_while_the_broker_is_down_and_no_task_lost(tmp_path: Path, backend: Backend) -> None:
    own = LocalNats().start()  # this test restarts its broker
    try:
        stack = Stack(tmp_path)
        app = stack.app(own.url)
        with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            wait_api_ready(app)
            before = [post(client, {"echo": f"before-{i}"}).json()["task_id"] for i in range(5)]
            own.stop(keep_store=True)
            wait_for(lambda: not app.state.tasks.broker.ready, what="the API to notice the broker is down")
            down = post(client, {"echo": "during"})
            assert down.status_code == 503
            assert down.json()["error"] == "service_unavailable" and "not accepted" in down.json()["detail"]
            assert client.get(f"/v1/async-tasks/{before[0]}", headers={"x-api-key": DEV_KEY}).status_code == 503
            own.start()
            wait_api_ready(app)
            after = post(client, {"echo": "after"})
            assert after.status_code == 200
            with forwarders(stack.path, backend.url, own.url):
                for i, task_id in enumerate(before):
                    assert poll_until_final(client, task_id)["result"] == {"echo": f"before-{i}"}
                assert poll_until_final(client, after.json()["task_id"])["status"] == "SUCCESS"
    finally:
        own.stop()


def test_forwarder_killed_mid_task_is_redelivered(tmp_path: Path, broker: LocalNats, backend: Backend) -> None:
    stack = Stack(tmp_path, task_timeout=2)  # ack wait 4 s
    app = stack.app(broker.url)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_api_ready(app)
        first = start_forwarder(stack.path, backend.url, broker.url)
        try:
            task_id = post(client, {"echo": "killed", "sleep": 1.5}).json()["task_id"]
            wait_for(lambda: backend.calls["killed"] == 1, what="the first delivery to reach the model")
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
        with forwarders(stack.path, backend.url, broker.url):
            body = poll_until_final(client, task_id, timeout=40)
        assert body["status"] == "SUCCESS" and body["result"] == {"echo": "killed"}
        assert backend.calls["killed"] == 2  # once per delivery: the killed one and the redelivery


def test_sigterm_finishes_held_tasks(tmp_path: Path, broker: LocalNats, backend: Backend) -> None:
    stack = Stack(tmp_path, per_worker=2)
    app = stack.app(broker.url)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_api_ready(app)
        proc = start_forwarder(stack.path, backend.url, broker.url, drain_seconds=10)
        try:
            ids = [post(client, {"echo": f"drain-{i}", "sleep": 1.0}).json()["task_id"] for i in range(2)]
            wait_for(lambda: backend.calls["drain-0"] == 1 and backend.calls["drain-1"] == 1,
                     what="both tasks to start")
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        for task_id in ids:
            record = client.get(f"/v1/async-tasks/{task_id}", headers={"x-api-key": DEV_KEY}).json()
            assert record["status"] == "SUCCESS"  # finished by the stopping forwarder, not redelivered
        assert backend.calls["drain-0"] == 1 and backend.calls["drain-1"] == 1


def test_sigterm_on_an_idle_forwarder_exits_within_the_grace_period(tmp_path: Path, broker: LocalNats,
                                                                     backend: Backend) -> None:
    """After a task, an idle forwarder (a pull waiting) exits promptly on SIGTERM, cleanly: a pod's
    grace period (and serve's 10 s) is never spent on a connection drain held up by its pull inbox."""
    stack = Stack(tmp_path)
    app = stack.app(broker.url)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_api_ready(app)
        proc = start_forwarder(stack.path, backend.url, broker.url, drain_seconds=5)
        try:
            task_id = post(client, {"echo": "idle"}).json()["task_id"]
            assert poll_until_final(client, task_id)["status"] == "SUCCESS"
            time.sleep(1.5)  # idle: the next pull is waiting on the server
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=8)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        # uvicorn re-raises the SIGTERM it handled once shut down, so a clean exit is -15 (or 0).
        assert proc.returncode in (0, -signal.SIGTERM) and b"Traceback" not in stderr, stderr.decode()[-2000:]


def test_api_restarted_while_tasks_wait(tmp_path: Path, broker: LocalNats, backend: Backend) -> None:
    stack = Stack(tmp_path)
    app = stack.app(broker.url)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_api_ready(app)
        ids = [post(client, {"echo": f"restart-{i}"}).json()["task_id"] for i in range(5)]
    with forwarders(stack.path, backend.url, broker.url):
        again = stack.app(broker.url)  # a new API process's app: nothing in memory carries over
        with running(again) as url, httpx.Client(base_url=url, timeout=30) as client:
            wait_api_ready(again)
            for i, task_id in enumerate(ids):
                assert poll_until_final(client, task_id)["result"] == {"echo": f"restart-{i}"}


def test_broker_restarted_with_file_storage_loses_nothing(tmp_path: Path, backend: Backend) -> None:
    own = LocalNats().start()
    try:
        stack = Stack(tmp_path)
        app = stack.app(own.url)
        with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            wait_api_ready(app)
            ids = [post(client, {"echo": f"durable-{i}"}).json()["task_id"] for i in range(10)]
            own.restart()
            wait_api_ready(app)
            with forwarders(stack.path, backend.url, own.url):
                for i, task_id in enumerate(ids):
                    assert poll_until_final(client, task_id)["result"] == {"echo": f"durable-{i}"}
    finally:
        own.stop()


def test_poison_task_fails_after_max_deliveries(tmp_path: Path, broker: LocalNats, backend: Backend) -> None:
    stack = Stack(tmp_path, max_deliveries=3)
    app = stack.app(broker.url)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client, \
            forwarders(stack.path, backend.url, broker.url):
        wait_api_ready(app)
        poison = post(client, {"echo": "poison", "fail": 500}).json()["task_id"]
        client_error = post(client, {"echo": "bad-input", "fail": 400}).json()["task_id"]
        body = poll_until_final(client, poison, timeout=40)
        assert body["status"] == "FAILURE" and body["status_code"] == 500
        assert "answered 500" in body["traceback"] and "failing on purpose" in body["traceback"]
        assert backend.calls["poison"] == 3
        # A 4xx is the caller's input: retrying cannot help, so it fails on the first delivery.
        bad = poll_until_final(client, client_error)
        assert bad["status"] == "FAILURE" and bad["status_code"] == 400 and backend.calls["bad-input"] == 1


def test_planned_names_match_the_live_server(tmp_path: Path, broker: LocalNats, backend: Backend) -> None:
    stack = Stack(tmp_path, per_worker=3)
    app = stack.app(broker.url)
    with running(app), forwarders(stack.path, backend.url, broker.url):
        wait_api_ready(app)
        queue = stack.layout.queues["jobs"]
        report = jsz(broker.monitor_url)
        streams = {s["name"]: s for a in report["account_details"] for s in a["stream_detail"]}
        assert stack.layout.stream in streams and f"KV_{stack.layout.bucket}" in streams
        stream = streams[stack.layout.stream]
        assert stream["config"]["subjects"] == list(stack.layout.stream_subjects)
        assert stream["config"]["retention"] == "workqueue" and stream["config"]["storage"] == "file"
        consumers = {c["name"]: c["config"] for c in stream["consumer_detail"]}
        assert set(consumers) == {queue.consumer}
        config = consumers[queue.consumer]
        assert config["filter_subject"] == queue.filter_subject == f"{queue.subject}.*"
        assert config["max_ack_pending"] == queue.max_ack_pending == 3 * 2
        assert config["max_deliver"] == queue.max_deliver
        assert config["ack_wait"] == queue.ack_wait_seconds * 1_000_000_000
        kv = streams[f"KV_{stack.layout.bucket}"]["config"]
        assert kv["max_age"] == stack.layout.bucket_ttl_seconds * 1_000_000_000


def test_soak_1000_tasks_three_forwarders_one_killed(tmp_path: Path, broker: LocalNats, backend: Backend) -> None:
    """Every task ends SUCCESS exactly once in the results, though a forwarder dies mid-run."""
    stack = Stack(tmp_path, task_timeout=2, per_worker=8)
    app = stack.app(broker.url)
    final_writes: Counter[str] = Counter()
    stop = threading.Event()
    subscribed = threading.Event()

    def watch() -> None:
        async def main() -> None:
            nc = await nats.connect(broker.url)

            async def on(msg: Any) -> None:
                if msg.data and TaskRecord.decode(msg.data).final:
                    final_writes[msg.subject.rsplit(".", 1)[-1]] += 1

            await nc.subscribe(f"$KV.{stack.layout.bucket}.>", cb=on)
            await nc.flush()
            subscribed.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await nc.drain()
        asyncio.run(main())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert subscribed.wait(10)
    started = time.monotonic()
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client, \
            forwarders(stack.path, backend.url, broker.url, count=3) as procs:
        wait_api_ready(app)
        ids = []
        for i in range(1000):
            r = post(client, {"echo": f"soak-{i}", "sleep": 0.01})
            assert r.status_code == 200
            ids.append(r.json()["task_id"])
            if i == 300:
                procs[0].send_signal(signal.SIGKILL)
                procs[0].communicate(timeout=10)
            if i == 600:
                procs[0] = start_forwarder(stack.path, backend.url, broker.url)
        statuses = Counter(poll_until_final(client, t, timeout=60)["status"] for t in ids)
    time.sleep(0.5)
    stop.set()
    watcher.join(timeout=10)
    assert statuses == Counter({"SUCCESS": 1000})
    assert set(final_writes) == set(ids) and set(final_writes.values()) == {1}
    assert time.monotonic() - started < 90


def test_serve_starts_local_nats_and_forwarders(tmp_path: Path, backend: Backend) -> None:
    """``serve --backend jobs=URL`` with no --nats: a local nats-server and a forwarder, stopped on exit."""
    import socket
    import sys

    stack = Stack(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sgp_infra", "serve", "--config-file", str(stack.path),
                             "--port", str(port), "--backend", f"jobs={backend.url}", "--status", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            def created() -> bool:
                try:
                    return post(client, {"echo": "served"}, key="sgp-infra-dev-key").status_code == 200
                except httpx.HTTPError:
                    return False
            wait_for(created, timeout=40, what="serve to accept a task")
            task_id = post(client, {"echo": "served-2"}, key="sgp-infra-dev-key").json()["task_id"]
            assert poll_until_final(client, task_id, key="sgp-infra-dev-key")["result"] == {"echo": "served-2"}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    stderr = err.decode()
    assert "nats-server" in stderr


def test_task_routes_check_query_and_body_and_are_described(tmp_path: Path) -> None:
    """The task routes read their own query and body (plain routes): FastAPI's 422s, and the OpenAPI
    document still describes both.  Checks run before the broker is needed (none is running)."""
    stack = Stack(tmp_path)
    app = stack.app("nats://127.0.0.1:1")
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        headers = {"x-api-key": DEV_KEY}
        no_model = client.post("/v1/async-tasks", json={"args": {}}, headers=headers)
        assert no_model.status_code == 422 and "model_endpoint_id" in no_model.json()["detail"]
        for body in (b"", b"{not json", b'{"args": {}, "surprise": 1}', b'{"args": {}, "callback_url": "x"}'):
            bad = client.post("/v1/async-tasks", params={"model_endpoint_id": "jobs"}, content=body,
                              headers={**headers, "content-type": "application/json"})
            assert bad.status_code == 422 and bad.json()["error"], (body, bad.text)
        task = "/v1/async-tasks/00000000-0000-4000-8000-000000000000"
        for wait in ("-1", "61", "soon"):
            bad = client.get(task, params={"wait": wait}, headers=headers)
            assert bad.status_code == 422 and "wait" in bad.json()["detail"], (wait, bad.text)
        assert client.get(task, params={"wait": "1"}).status_code == 401
        ops = client.get("/openapi.json").json()["paths"]
        create = ops["/v1/async-tasks"]["post"]
        assert [p["name"] for p in create["parameters"]] == ["model_endpoint_id"]
        assert "args" in create["requestBody"]["content"]["application/json"]["schema"]["properties"]
        get = ops["/v1/async-tasks/{task_id}"]["get"]
        assert {p["name"] for p in get["parameters"]} == {"task_id", "wait"}


def test_seen_writes_are_bounded_ordered_and_unused_while_disconnected(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The record writes kept from the results subject: latest per task, oldest dropped past the bound,
    a delete forgets the task, and never used while the broker is not connected."""
    from types import SimpleNamespace

    from sgp_infra.api.tasks import service as service_module

    monkeypatch.setattr(service_module, "RECENT_RECORDS", 2)
    stack = Stack(tmp_path)
    tasks = service_module.TaskService(stack.catalog, "nats://127.0.0.1:1")
    bucket = stack.layout.bucket

    def write(task_id: str, status: str) -> None:
        record = TaskRecord(task_id=task_id, model="jobs", account_id="a", status=status,  # type: ignore[arg-type]
                            enqueued_at=time.time(), finished_at=time.time() if status == "SUCCESS" else None)
        asyncio.run(tasks._on_record(SimpleNamespace(subject=f"$KV.{bucket}.{task_id}", data=record.encode())))

    write("t1", "PENDING")
    write("t2", "PENDING")
    write("t1", "SUCCESS")  # t1 is now the latest write: t2 goes first
    write("t3", "PENDING")
    assert list(tasks._recent) == ["t1", "t3"]
    asyncio.run(tasks._on_record(SimpleNamespace(subject=f"$KV.{bucket}.t3", data=b"")))
    assert list(tasks._recent) == ["t1"]
    assert tasks._seen("t1") is None  # not connected: the bucket is the only source
    monkeypatch.setattr(type(tasks.broker), "ready", property(lambda self: True))
    seen = tasks._seen("t1")
    assert seen is not None and seen.status == "SUCCESS"
    assert tasks._seen("t2") is None
