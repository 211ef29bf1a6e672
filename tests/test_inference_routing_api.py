"""Routing across replicas through the real API: several local replicas on 127.0.0.1.

Each replica is a small aiohttp server answering OpenAI-shaped chat and
embedding calls with its own name, recording every call it served; a test
can hold its answers (a gate), make it answer 503, or take it down
(connection refused) and up again on the same port.  The API is the real
app (``create_app``) with ``--backend MODEL=URL1,URL2,...`` lists, or with
pods from EndpointSlices served by the fake Kubernetes API of
``test_inference_endpoints``.

No assertion depends on timing: concurrency is made with gates, and the pod
skip runs on a fake clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import httpx
from aiohttp import web
from kubernetes_asyncio.client import Configuration

from api_helpers import running
from sgp_infra.api.inference import InferenceSettings, endpoint_sources
from sgp_infra.api.inference.routing import chat_prefix_key
from sgp_infra.catalog.model import ModelInference
from test_inference_endpoints import NS, FakeKube, endpoint_slice
from test_inference_helpers import HEADERS, make_app, make_catalog, serve

CHAT = "vllm-chat"  # CHAT_COMPLETION: prefix-affinity by default
EMBED = "vllm-embed"  # EMBEDDING: least-load by default
FAST = dict(retries=2, backoff=0.01, wake_poll_interval=0.05)


# --- the replicas ------------------------------------------------------------------------------


class Replica:
    """One replica's behaviour and what it served."""

    def __init__(self, name: str):
        self.name = name
        self.served: list[dict[str, Any]] = []
        self.gate = threading.Event()  # set: answer at once; clear: hold answers until set
        self.gate.set()
        self.stream_gate = threading.Event()  # a stream sends its first chunk, then waits for this
        self.stream_gate.set()
        self.status = 200
        self.port = 0
        self.runner: Optional[web.AppRunner] = None

    async def _wait(self, gate: threading.Event) -> None:
        while not gate.is_set():
            await asyncio.sleep(0.01)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.served.append(body)
        if self.status != 200:
            return web.json_response({"error": "busy"}, status=self.status)
        await self._wait(self.gate)
        if request.path.endswith("/embeddings"):
            return web.json_response({"object": "list", "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1},
                                      "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}]})
        if body.get("stream"):
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": self.name}, "finish_reason": None}]}
            await response.write(b"data: " + web.json_response(chunk).body + b"\n\n")  # type: ignore[operator]
            await self._wait(self.stream_gate)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response({
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.name}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    async def healthy(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


class Fleet:
    """Replicas on one event loop in a thread; :meth:`down` and :meth:`up` stop and
    restart one on its port (connection refused in between)."""

    def __init__(self, n: int):
        self.replicas = [Replica(f"r{i}") for i in range(n)]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    async def _start(self, r: Replica) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", r.handle)
        app.router.add_get("/{tail:.*}", r.healthy)
        r.runner = web.AppRunner(app, access_log=None)
        await r.runner.setup()
        site = web.TCPSite(r.runner, "127.0.0.1", r.port, reuse_address=True)
        await site.start()
        if not r.port:
            r.port = r.runner.addresses[0][1]

    async def _stop(self, r: Replica) -> None:
        if r.runner is not None:
            await r.runner.cleanup()
            r.runner = None

    def __enter__(self) -> Fleet:
        self.thread.start()
        for r in self.replicas:
            self._run(self._start(r))
        return self

    def __exit__(self, *exc: Any) -> None:
        for r in self.replicas:
            r.gate.set()
            r.stream_gate.set()
            self._run(self._stop(r))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()  # else its selector and self-pipe sockets leak (a ResourceWarning)

    def down(self, i: int) -> None:
        self._run(self._stop(self.replicas[i]))

    def up(self, i: int) -> None:
        self._run(self._start(self.replicas[i]))

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.replicas[i].port}"

    def urls(self) -> str:
        return ",".join(self.url(i) for i in range(len(self.replicas)))

    def index(self, pod: Optional[str]) -> int:
        return [self.url(i) for i in range(len(self.replicas))].index(pod)

    def counts(self) -> list[int]:
        return [len(r.served) for r in self.replicas]


class Clock:
    """A monotonic clock the test moves (the pod skip's)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def api(backends: dict[str, str], catalog: Any = None, *, clock: Optional[Clock] = None,
        prepare: Optional[Callable[[Any], None]] = None) -> Iterator[tuple[httpx.Client, Any]]:
    app = make_app(catalog or make_catalog(), backends, settings=InferenceSettings(**FAST))
    if clock is not None:
        app.state.inference.routing.clock = clock
    if prepare is not None:
        prepare(app)
    with serve(app) as url, httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
        yield client, app


def v5_chat(client: httpx.Client, messages: list[dict[str, str]], model: str = CHAT, stream: bool = False) -> str:
    r = client.post("/v5/chat/completions", json={"model": f"launch/{model}", "messages": messages,
                                                  "stream": stream})
    assert r.status_code == 200, r.text
    if stream:
        return r.text
    return r.json()["choices"][0]["message"]["content"]


def v4_chat(client: httpx.Client, history: list[dict[str, str]], prompt: str) -> str:
    r = client.post(f"/v4/models/{CHAT}/chat-completions",
                    json={"model_deployment_id": CHAT, "chat_history": history, "prompt": prompt})
    assert r.status_code == 200, r.text
    return r.json()["completions"][0][1][0]


def embed(client: httpx.Client) -> None:
    r = client.post(f"/v4/models/{EMBED}/embeddings", json={"texts": ["hello"]})
    assert r.status_code == 200, r.text


def conversation(n: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"question number {n}: what is {n} squared?"}]


def sample(app: Any, name: str, **labels: str) -> float:
    return app.state.metrics.registry.get_sample_value(name, labels) or 0.0


def object_name(model: str) -> str:
    return make_catalog().models[model].object_name


def until(check: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw: {what}")
        time.sleep(0.01)


# --- strategies -------------------------------------------------------------------------------------


def test_least_load_avoids_a_replica_that_is_still_busy() -> None:
    with ThreadPoolExecutor(3) as pool, Fleet(3) as fleet, api({EMBED: fleet.urls()}) as (client, app):
        for r in fleet.replicas:
            r.gate.clear()
        held = [pool.submit(embed, client) for _ in range(3)]
        until(lambda: sum(fleet.counts()) == 3, "three calls in flight")
        assert fleet.counts() == [1, 1, 1]  # least-load: one each while all are busy
        fleet.replicas[1].gate.set()
        fleet.replicas[2].gate.set()
        until(lambda: sum(f.done() for f in held) == 2, "r1 and r2 answered")
        for _ in range(10):  # r0 is still slow with one call: every new call goes elsewhere
            embed(client)
        assert fleet.counts()[0] == 1 and sum(fleet.counts()) == 13
        fleet.replicas[0].gate.set()
        for f in held:
            f.result()
        label = object_name(EMBED)
        assert sample(app, "sgp_infra_model_routing_total", model=label, outcome="least-load") == 13


def test_prefix_affinity_keeps_a_conversation_on_one_replica_and_spreads_conversations() -> None:
    with Fleet(3) as fleet, api({CHAT: fleet.urls()}) as (client, app):
        # v5: the history grows turn by turn; every turn lands where the first did
        messages = conversation(1)
        answers = []
        for turn in range(5):
            answers.append(v5_chat(client, messages))
            messages = messages + [{"role": "assistant", "content": answers[-1]},
                                   {"role": "user", "content": f"and turn {turn}?"}]
        assert len(set(answers)) == 1, answers
        # v4: chat_history plus the prompt, the same way
        history: list[dict[str, str]] = [{"role": "system", "content": "Be brief."}]
        prompt = "tell me about routing"
        v4_answers = []
        for turn in range(5):
            v4_answers.append(v4_chat(client, history, prompt))
            history = history + [{"role": "user", "content": prompt}, {"role": "assistant", "content": "ok"}]
            prompt = f"follow-up {turn}"
        assert len(set(v4_answers)) == 1, v4_answers
        # different conversations over the same system prompt: every replica gets some
        first = {v5_chat(client, conversation(n)) for n in range(100, 140)}
        assert first == {"r0", "r1", "r2"}
        label = object_name(CHAT)
        assert sample(app, "sgp_infra_model_routing_total", model=label, outcome="hit") == 50
        assert sample(app, "sgp_infra_model_routing_total", model=label, outcome="spill") == 0


def chat_per_worker(per_worker: int) -> Any:
    """The test catalogue with the chat model serving ``per_worker`` calls per pod (the load bound's
    floor), and room for them all under the in-flight cap."""
    return make_catalog({CHAT: {"model_type": "CHAT_COMPLETION", "model_template_id": CHAT,
                                "per_worker": per_worker, "max_workers": 16}})


def test_the_load_bound_spills_a_hot_prefix() -> None:
    with ThreadPoolExecutor(6) as pool, Fleet(3) as fleet, \
            api({CHAT: fleet.urls()}, chat_per_worker(1)) as (client, app):
        for r in fleet.replicas:
            r.gate.clear()
        calls = [pool.submit(v5_chat, client, conversation(7)) for _ in range(6)]
        until(lambda: sum(fleet.counts()) == 6, "six calls in flight")
        # One prefix, six calls at once.  The bound, ceil(1.25 x (in flight + 1) / 3) with a floor of
        # per_worker = 1, is 1, 1, 2, 2, 3, 3 at the six picks: the own pod takes calls 1, 3, 5, the next
        # pod on the ring 2, 4, 6.
        assert sorted(fleet.counts()) == [0, 3, 3]
        for r in fleet.replicas:
            r.gate.set()
        assert len({f.result() for f in calls}) == 2
        label = object_name(CHAT)
        assert sample(app, "sgp_infra_model_routing_total", model=label, outcome="hit") == 3
        assert sample(app, "sgp_infra_model_routing_total", model=label, outcome="spill") == 3


def test_a_hot_prefix_stays_on_its_pod_while_the_pod_serves_fewer_than_per_worker_calls() -> None:
    with ThreadPoolExecutor(6) as pool, Fleet(3) as fleet, \
            api({CHAT: fleet.urls()}, chat_per_worker(4)) as (client, app):
        for r in fleet.replicas:
            r.gate.clear()
        calls = [pool.submit(v5_chat, client, conversation(7)) for _ in range(6)]
        until(lambda: sum(fleet.counts()) == 6, "six calls in flight")
        # The relative bound alone would spill the second call already (1, 1, 2, 2, 3, 3); the floor of
        # per_worker = 4 keeps four on the own pod, then the relative bound (3) is below the own pod's 4.
        assert sorted(fleet.counts()) == [0, 2, 4]
        for r in fleet.replicas:
            r.gate.set()
        assert all(f.result() for f in calls)
        label = object_name(CHAT)
        assert sample(app, "sgp_infra_model_routing_total", model=label, outcome="hit") == 4
        assert sample(app, "sgp_infra_model_routing_total", model=label, outcome="spill") == 2


def test_service_strategy_uses_the_first_url_only() -> None:
    catalog = make_catalog(inference={CHAT: {"routing": "service"}})
    with Fleet(3) as fleet, api({CHAT: fleet.urls()}, catalog) as (client, app):
        assert {v5_chat(client, conversation(n)) for n in range(12)} == {"r0"}
        assert fleet.counts() == [12, 0, 0]
        assert sample(app, "sgp_infra_model_routing_total", model=object_name(CHAT), outcome="service") == 12


# --- health -------------------------------------------------------------------------------------


def owned_by(app: Any, fleet: Fleet, i: int) -> list[dict[str, str]]:
    """A conversation whose own pod (first on the ring) is replica ``i``."""
    replicas = app.state.inference.routing.replicas(object_name(CHAT), "prefix-affinity")
    for n in range(1000):
        if fleet.index(replicas.ring.owner(chat_prefix_key(conversation(n)))) == i:
            return conversation(n)
    raise AssertionError("no conversation owned by the replica")


def test_a_dead_replica_is_skipped_and_comes_back_after_it_recovers() -> None:
    clock = Clock()
    with Fleet(3) as fleet, api({CHAT: fleet.urls()}, clock=clock) as (client, app):
        label = object_name(CHAT)
        pod0 = fleet.url(0).partition("://")[2]
        messages = owned_by(app, fleet, 0)
        fleet.down(0)
        first = v5_chat(client, messages)  # refused by r0, retried on the next pod of the ring
        assert first != "r0"
        assert sample(app, "sgp_infra_model_pod_requests_total", model=label, pod=pod0) == 1
        for _ in range(5):  # r0 is skipped: no more attempts there, the same other pod answers
            assert v5_chat(client, messages) == first
        assert sample(app, "sgp_infra_model_pod_requests_total", model=label, pod=pod0) == 1
        fleet.up(0)
        assert v5_chat(client, messages) == first  # recovered, but still inside its skip time
        clock.now += ModelInference().pod_skip_seconds + 0.1
        assert v5_chat(client, messages) == "r0"  # the skip is over: back to its own pod
        assert sample(app, "sgp_infra_model_errors_total", model=label, kind="connect") == 0  # no call failed


def test_the_pod_skip_time_is_the_model_s_catalogue_setting() -> None:
    clock = Clock()
    catalog = make_catalog(inference={CHAT: {"pod_skip_seconds": 30}})
    with Fleet(3) as fleet, api({CHAT: fleet.urls()}, catalog, clock=clock) as (client, app):
        messages = owned_by(app, fleet, 0)
        fleet.down(0)
        other = v5_chat(client, messages)
        assert other != "r0"
        fleet.up(0)
        clock.now += ModelInference().pod_skip_seconds + 0.1  # past the default, inside the model's 30 s
        assert v5_chat(client, messages) == other
        clock.now += 30
        assert v5_chat(client, messages) == "r0"


def test_a_zero_pod_skip_time_retries_a_refusing_pod_at_the_next_call() -> None:
    catalog = make_catalog(inference={CHAT: {"pod_skip_seconds": 0}})
    with Fleet(3) as fleet, api({CHAT: fleet.urls()}, catalog) as (client, app):
        messages = owned_by(app, fleet, 0)
        fleet.down(0)
        assert v5_chat(client, messages) != "r0"
        fleet.up(0)
        assert v5_chat(client, messages) == "r0"  # never skipped: back on its own pod at once


def test_a_503_skips_the_replica_and_retries_on_another() -> None:
    clock = Clock()
    with Fleet(3) as fleet, api({CHAT: fleet.urls()}, clock=clock) as (client, app):
        messages = owned_by(app, fleet, 1)
        fleet.replicas[1].status = 503
        other = v5_chat(client, messages)
        assert other != "r1" and fleet.counts()[1] == 1
        fleet.replicas[1].status = 200
        assert v5_chat(client, messages) == other and fleet.counts()[1] == 1  # skipped
        clock.now += 60
        assert v5_chat(client, messages) == "r1"


# --- pods from EndpointSlices -------------------------------------------------------------------


def test_an_endpointslice_change_moves_only_the_affected_conversations() -> None:
    kube = FakeKube()
    with Fleet(4) as fleet, running(kube.app()) as kube_url:
        label = object_name(CHAT)
        for i in range(4):
            kube.put(endpoint_slice(f"{label}-{i}", label, [("127.0.0.1", True)], port=fleet.replicas[i].port))

        def prepare(app: Any) -> None:
            gw = app.state.inference
            gw.settings.endpoint_slices = True
            gw.settings.kube_configuration = Configuration(host=kube_url)
            gw.namespace = NS  # the fake serves its namespace only
            app.state.endpoint_sources = endpoint_sources(gw, app.state.catalog, {}, app.state.status)

        with api({}, prepare=prepare) as (client, app):
            routing = app.state.inference.routing
            until(lambda: len(routing.pods(label)) == 4, "four pods from the slices")
            convs = [conversation(n) for n in range(40)]
            before = [v5_chat(client, c) for c in convs]
            assert set(before) == {"r0", "r1", "r2", "r3"}
            kube.put(endpoint_slice(f"{label}-2", label, [("127.0.0.1", False)], port=fleet.replicas[2].port))
            until(lambda: len(routing.pods(label)) == 3, "r2 not ready")
            after = [v5_chat(client, c) for c in convs]
            moved = [n for n in range(40) if after[n] != before[n]]
            assert moved and all(before[n] == "r2" for n in moved)
            assert "r2" not in after
            kube.put(endpoint_slice(f"{label}-2", label, [("127.0.0.1", True)], port=fleet.replicas[2].port))
            until(lambda: len(routing.pods(label)) == 4, "r2 back")
            assert [v5_chat(client, c) for c in convs] == before  # the ring is the pod set's alone


# --- metrics -------------------------------------------------------------------------------------


def test_per_pod_metrics_count_a_stream_until_it_ends() -> None:
    with ThreadPoolExecutor(1) as pool, Fleet(2) as fleet, api({CHAT: fleet.urls()}) as (client, app):
        label = object_name(CHAT)
        for r in fleet.replicas:
            r.stream_gate.clear()
        streaming: Future[str] = pool.submit(v5_chat, client, conversation(3), CHAT, True)
        until(lambda: sum(fleet.counts()) == 1, "the stream started")
        i = 0 if fleet.counts()[0] else 1
        pod = fleet.url(i).partition("://")[2]
        until(lambda: sample(app, "sgp_infra_model_pod_requests_in_flight", model=label, pod=pod) == 1,
              "the stream counted on its pod")
        assert app.state.inference.routing.models[label].in_flight[fleet.url(i)] == 1
        fleet.replicas[i].stream_gate.set()
        assert f"r{i}" in streaming.result()
        until(lambda: sample(app, "sgp_infra_model_pod_requests_in_flight", model=label, pod=pod) == 0,
              "released when the stream ended")
        assert app.state.inference.routing.models[label].in_flight[fleet.url(i)] == 0
        text = client.get("/metrics").text
        for line in (f'sgp_infra_model_pod_requests_in_flight{{model="{label}",pod="{pod}"}} 0.0',
                     f'sgp_infra_model_pod_requests_total{{model="{label}",pod="{pod}"}} 1.0',
                     f'sgp_infra_model_routing_total{{model="{label}",outcome="hit"}} 1.0',
                     f'sgp_infra_model_requests_in_flight{{model="{label}"}} 0.0'):
            assert line in text, line


def test_a_departed_pod_s_series_are_removed_once_its_last_call_ends() -> None:
    with ThreadPoolExecutor(1) as pool, Fleet(3) as fleet, api({CHAT: fleet.urls()}) as (client, app):
        label = object_name(CHAT)
        gateway = app.state.inference
        pods = [fleet.url(i).partition("://")[2] for i in range(3)]

        def series(i: int) -> Optional[float]:
            return app.state.metrics.registry.get_sample_value("sgp_infra_model_pod_requests_total",
                                                              {"model": label, "pod": pods[i]})

        n = 0
        while not all(series(i) for i in range(3)):  # every pod has served a call
            v5_chat(client, conversation(n))
            n += 1
        held = owned_by(app, fleet, 1)
        fleet.replicas[1].stream_gate.clear()
        streaming: Future[str] = pool.submit(v5_chat, client, held, CHAT, True)
        until(lambda: sample(app, "sgp_infra_model_pod_requests_in_flight", model=label, pod=pods[1]) == 1,
              "a stream in flight on r1")
        gateway.on_pods_change(label, frozenset({fleet.url(2)}))  # r0 and r1 leave; r1 still streams
        assert series(0) is None  # no call in flight: gone at once
        assert series(1) is not None and series(2) is not None
        fleet.replicas[1].stream_gate.set()
        assert "r1" in streaming.result()
        until(lambda: series(1) is None, "r1's series removed when its stream ended")
        assert series(2) is not None
        assert f'pod="{pods[0]}"' not in client.get("/metrics").text


# --- serve --backend MODEL=URL1,URL2 ------------------------------------------------------------------


def test_serve_backend_lists_are_checked_and_the_first_url_is_the_service() -> None:
    import argparse

    import pytest

    from sgp_infra.api.common import model_base_url
    from sgp_infra.cli.serve import backend_arg
    from sgp_infra.cli.serving import build_status

    assert backend_arg("chat=http://127.0.0.1:5005/") == ("chat", "http://127.0.0.1:5005")
    assert backend_arg("chat=http://127.0.0.1:5005/, http://127.0.0.1:5006") == (
        "chat", "http://127.0.0.1:5005,http://127.0.0.1:5006")
    for bad in ("chat=http://a:1,http://a:1", "chat=http://a:1,", "chat=http://a:1,ftp://b:2", "chat"):
        with pytest.raises(argparse.ArgumentTypeError):
            backend_arg(bad)
    catalog = make_catalog()
    backends = {CHAT: "http://127.0.0.1:5005,http://127.0.0.1:5006"}
    model = catalog.models[CHAT]
    assert model_base_url(model, backends, "ns") == "http://127.0.0.1:5005"
    status = build_status("probe", catalog, None, backends)
    assert status.targets[model.object_name] == "http://127.0.0.1:5005/readyz"  # type: ignore[attr-defined]
    app = make_app(catalog, backends)
    sources = app.state.endpoint_sources
    assert len(sources) == 1 and sources[0].pods(model.object_name) == {"http://127.0.0.1:5005",
                                                                         "http://127.0.0.1:5006"}
    # one URL: the Service stand-in, as before routing (no pods, no EndpointSlice watch without Kubernetes)
    assert make_app(catalog, {CHAT: "http://127.0.0.1:5005"}).state.endpoint_sources == []
