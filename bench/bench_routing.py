"""Benchmark: routing across a model's replicas on a simulated vLLM-like fleet.

Not a test (nothing here asserts timing).  Run from the repository root:

    venv/bin/python bench/bench_routing.py            # ~3 min: 3 repeats x 3 strategies x (8 s warm-up + 12 s measured)
    venv/bin/python bench/bench_routing.py --quick    # a few seconds, a smaller load, one repeat (a smoke run)
    venv/bin/python bench/bench_routing.py --via-api  # the same through the real API (serve --backend M=U1,U2,...)

Method
------
``K`` replicas (``--replicas``, 4) each run a small aiohttp server on
127.0.0.1 speaking a streamed OpenAI chat completion (``POST
/v1/chat/completions``, SSE, ``usage.prompt_tokens_details.cached_tokens`` in
the last event, as vLLM reports it).  A replica behaves like one vLLM engine,
with timers instead of a GPU:

* it runs at most ``M`` sequences (``--slots``, 8; vLLM's ``max_num_seqs``)
  and queues the rest (FIFO);
* its KV cache holds ``C`` tokens (``--kv-tokens``) in 16-token blocks, each
  keyed by a hash chained over the whole prefix (vLLM's automatic prefix
  caching).  A running sequence holds the blocks of its prompt and answer
  (reserved when it starts); when it ends they stay cached, and the least
  recently used of the blocks no sequence holds are evicted to make room.  A
  prompt reuses its longest cached run of leading blocks;
* prefill takes ``--prefill-ms`` per *uncached* prompt token and runs one
  sequence at a time (compute-bound: one prompt's prefill delays the next),
  then each output token takes ``--decode-ms`` (memory-bound: the running
  sequences advance together).

Every duration is a deadline on the event loop's clock: the prefill unit is
free again at a computed time, and a sequence's tokens are due at fixed times
after its prefill.  A late wake-up (the shared CPU busy elsewhere) delays that
one event: lags do not add up along a sequence's tokens (its slot is held at
most one late wake-up past its due end) nor along the prefill queue, so CPU
contention does not turn into extra queueing; the queueing the strategies are
compared on is the model's.  What CPU contention still adds
is the client-side delay of the first event itself, the same for every
strategy in expectation; the repeats (below) take care of its bursts.

Tokens are whitespace-separated words; a chat is flattened as
``<role> words...`` per message followed by ``<assistant>``, the way a chat
template is, so turn *n+1* of a conversation starts with turn *n*'s prompt
and answer.

Workload (seeded, the same for every strategy within a repeat): multi-turn
conversations, such as an assistant or agent working over a document, arrive
as a Poisson process (open loop: arrivals do not wait for answers), each over
one of 4 shared system prompts (~200 tokens, Zipf-weighted), 2-8 turns; the
first user turn carries a document-sized context (lognormal, median 400
tokens), the later ones short questions (median 30); answers are lognormal
(median 48, long tail, capped at 400 tokens); the next question follows an
answer after ~1 s (exponential: a tool call or a quick reader).  Every
strategy gets a fresh fleet (cold caches); only turns sent after the warm-up
are measured.

Sizing (why these defaults):

* ``C`` = 32k tokens: the KV cache of an 8B model on a 24 GB GPU (an L4 or
  A10G): 90% of the memory (vLLM's ``gpu_memory_utilization``) less ~16 GB of
  bf16 weights and the activations leaves about 4 GiB, at 128 KiB per token
  (Llama 3.1 8B: 32 layers x 8 KV heads x 128 x 2 x 2 bytes) some 32k tokens,
  2,048 blocks.  It holds the running sequences and a few dozen finished
  conversations.  The bench prints it
  against the tokens the conversations in progress have accumulated
  (``live conversation prefixes``): about 2.5x their share per replica when
  each conversation stays on one replica, about 0.6x what a replica is asked
  to hold when conversations visit every replica.  That middle regime is
  where placement decides hits, as on real GPUs: a cache many times the
  working set makes every strategy hit, one far below it makes none hit.
* ``M`` = 8 and 9 conversations a second give an offered load of about 75%
  of the fleet's slots (printed: ``offered load``), the busy-but-not-saturated
  regime where routing changes queueing.
* Prefill costs 1/160 of a decoded token per token (0.05 vs 8 ms), the ratio
  of an 8B model on a current GPU, at roughly real time.
* The system prompts are short next to the conversations: a long shared
  system prompt is cached on every replica whatever the routing, and narrows
  the difference.  The bench prints the hit rate's bounds: the share of
  prompt tokens that the system prompts alone cover (about what random
  routing with no reuse would get) and the share any strategy could hit if
  every turn found its whole conversation cached (the ceiling).  The
  hit-rate ratio cannot exceed their quotient.

Repeats: ``--repeats`` (3) runs every strategy once per seed (``--seed``,
``--seed`` + 1, ...), each run of a repeat at the same offered load (its
seed's workload).  The ratios to ``service`` are taken per repeat and their
median is the verdict (each repeat's ratio is printed too); the table pools
every repeat's samples (about 550 turns measured per strategy and repeat, so
the pooled p99 rests on some 15 samples, a single repeat's on 5).  A burst of
CPU contention from other work on the machine lands in one repeat and moves
that repeat's ratio, not the median.

Strategies, routed by default in this process by
:class:`sgp_infra.api.inference.routing.Replicas` (``Router.route`` is the one
place a call's pod is chosen), the way the API's gateway routes:

* ``service``: what kube-proxy does today, a uniformly random pod per call;
* ``least-load``: fewest calls in flight from this router;
* ``prefix-affinity``: CHWBL over :func:`~sgp_infra.api.inference.routing.chat_prefix_key`
  (system prompt + first user turn), bound factor ``--bound-factor`` (1.25),
  the bound's floor a replica's slots (the model's ``per_worker``).

``--via-api`` sends the same workload through the real API instead: one
``python -m sgp_infra serve`` subprocess (``--status none``, one worker) on a
temporary stack holding one VLLM chat model per strategy and repeat
(``inference.routing``, ``load_bound_factor``), each with its own fleet as
``--backend sim-<strategy>-<repeat>=URL1,URL2,...``.  The client sends v5
chat completions (``/v5/chat/completions``, streamed); the API passes the
backend's events, usage included, through.  For ``service`` the model's one
backend URL is a stand-in for kube-proxy in this process (each call to a
uniformly random replica, streamed through: one more loopback hop).  Hits
and spills come from the API's ``sgp_infra_model_routing_total`` (read at the
end of the warm-up and of the run).  In-process routing stays the default:
the figures then depend on the routing alone, not on the API's CPU on a
shared machine, and a run needs no subprocess.

Reported per strategy: TTFT p50/p99 (client-side: request sent → first
token event), completed requests per second in the measured window, the
fleet's prefix-cache hit rate (cached / prompt tokens, as vLLM's
``prefix_cache_hit_rate``), affinity hits and spills; then the ratios to
``service`` against the targets of issue 16: ``prefix-affinity`` at least 2x
the hit rate and at most 0.5x the TTFT p50, ``least-load`` at most 0.7x the
TTFT p99.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import OrderedDict
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgp_infra.api.auth import DEV_API_KEY  # noqa: E402
from sgp_infra.api.inference.routing import (  # noqa: E402
    Choice, Lease, Replicas, Strategy, chat_prefix_key)

BLOCK = 16
STRATEGIES: tuple[Strategy, ...] = ("service", "least-load", "prefix-affinity")


@dataclass
class Params:
    replicas: int = 4
    slots: int = 8
    kv_tokens: int = 32_768
    prefill_ms: float = 0.05
    decode_ms: float = 8.0
    conversations_per_s: float = 9.0
    warmup_s: float = 8.0
    measure_s: float = 12.0
    think_s: float = 1.0
    system_prompts: int = 4
    system_tokens: int = 200
    context_median: int = 400
    question_median: int = 30
    answer_median: int = 48
    answer_cap: int = 400
    turns: tuple[int, int] = (2, 8)
    bound_factor: float = 1.25
    seed: int = 1
    repeats: int = 3


QUICK = dict(conversations_per_s=6.0, warmup_s=0.6, measure_s=1.6, think_s=0.3, context_median=200, repeats=1)


# --- the simulated engine ------------------------------------------------------------------


def flatten(messages: list[dict[str, Any]]) -> list[str]:
    """A chat as the token list a chat template would make (generation prompt included)."""
    out: list[str] = []
    for m in messages:
        out.append(f"<{m['role']}>")
        out.extend(str(m["content"]).split())
    out.append("<assistant>")
    return out


def block_hashes(tokens: list[str]) -> list[bytes]:
    """One hash per full block, chained: a block's key covers every token before it."""
    out, prev = [], b""
    for start in range(0, len(tokens) - len(tokens) % BLOCK, BLOCK):
        prev = hashlib.blake2b(prev + " ".join(tokens[start:start + BLOCK]).encode(), digest_size=12).digest()
        out.append(prev)
    return out


class Engine:
    """One replica: ``slots`` sequences at a time, serial prefill, a KV cache of ``kv_tokens``
    in blocks shared by the running sequences (pinned) and the prefix cache (the rest, LRU).

    Every duration is scheduled against a deadline on the event loop's clock, not slept
    step by step: a late wake-up (a busy shared CPU) delays that one event, and lags do
    not add up along a sequence's tokens or the prefill queue, so the queueing the
    strategies are compared on is the model's, not the machine's.
    """

    def __init__(self, p: Params):
        self.p = p
        self.slots = asyncio.Semaphore(p.slots)
        #: When the prefill "GPU" is free again (loop time): prefills run one after another.
        self.prefill_free_at = 0.0
        #: Blocks of running sequences, with how many sequences hold each: never evicted.
        self.pinned: dict[bytes, int] = {}
        #: Blocks no running sequence holds, least recently used first: the prefix cache proper.
        self.free: OrderedDict[bytes, None] = OrderedDict()
        self.capacity = p.kv_tokens // BLOCK

    def lookup(self, hashes: list[bytes]) -> int:
        """Tokens of the longest cached run of leading blocks."""
        hit = 0
        for h in hashes:
            if h not in self.pinned and h not in self.free:
                break
            hit += 1
        return hit * BLOCK

    def pin(self, hashes: list[bytes]) -> None:
        """A sequence starts: its blocks (prompt and answer) are held until :meth:`unpin`;
        the least recently used free blocks make room."""
        for h in hashes:
            if h in self.free:
                del self.free[h]
            self.pinned[h] = self.pinned.get(h, 0) + 1
        while len(self.pinned) + len(self.free) > self.capacity and self.free:
            self.free.popitem(last=False)

    def unpin(self, hashes: list[bytes]) -> None:
        """A sequence ended: its blocks stay cached, now the most recently used free ones."""
        for h in hashes:
            n = self.pinned[h] - 1
            if n:
                self.pinned[h] = n
            else:
                del self.pinned[h]
                self.free[h] = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tokens = flatten(body["messages"])
        n_out = max(1, int(body.get("max_tokens") or 16))
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        async with self.slots:
            hashes = block_hashes(tokens + ["o"] * n_out)
            # vLLM recomputes at least the last prompt token, even on a full hit
            cached = min(self.lookup(hashes[:len(tokens) // BLOCK]), len(tokens) - 1)
            self.pin(hashes)
            try:
                prefilled = max(loop.time(), self.prefill_free_at) + (len(tokens) - cached) * self.p.prefill_ms / 1000
                self.prefill_free_at = prefilled
                step_s = self.p.decode_ms / 1000
                await sleep_until(loop, prefilled + step_s)
                await resp.write(event({"choices": [{"index": 0, "delta": {"content": " o"}}]}))
                done, chunks = 1, 4
                while done < n_out:
                    step = math.ceil((n_out - done) / chunks)
                    chunks = max(1, chunks - 1)
                    done += step
                    await sleep_until(loop, prefilled + step_s * done)
                    await resp.write(event({"choices": [{"index": 0, "delta": {"content": " o" * step}}]}))
            finally:
                self.unpin(hashes)
        usage = {"prompt_tokens": len(tokens), "completion_tokens": n_out,
                 "prompt_tokens_details": {"cached_tokens": cached}}
        await resp.write(event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "usage": usage}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


async def sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Sleep until ``deadline`` on the loop's clock (at once if it has passed)."""
    await asyncio.sleep(max(0.0, deadline - loop.time()))


def event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class Fleet:
    """``K`` engines, each on its own loopback port."""

    def __init__(self, p: Params):
        self.p = p
        self.runners: list[web.AppRunner] = []
        self.urls: list[str] = []

    async def __aenter__(self) -> Fleet:
        for _ in range(self.p.replicas):
            app = web.Application()
            app.router.add_post("/v1/chat/completions", Engine(self.p).handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.runners.append(runner)
            self.urls.append(f"http://{host}:{port}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for runner in self.runners:
            await runner.cleanup()


# --- the workload -----------------------------------------------------------------------------


@dataclass
class Turn:
    question: str
    max_tokens: int
    think_s: float


@dataclass
class Conversation:
    start_s: float
    system: str
    turns: list[Turn]


def lognormal(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    return max(1, min(cap, round(median * math.exp(rng.gauss(0, sigma)))))


def workload(p: Params) -> list[Conversation]:
    rng = random.Random(p.seed)
    vocab = [f"w{i}" for i in range(5000)]

    def words(n: int) -> str:
        return " ".join(rng.choices(vocab, k=n))

    systems = [words(p.system_tokens) for _ in range(p.system_prompts)]
    weights = [1 / (i + 1) for i in range(p.system_prompts)]
    out, t = [], 0.0
    horizon = p.warmup_s + p.measure_s
    while True:
        t += rng.expovariate(p.conversations_per_s)
        if t >= horizon:
            return out
        turns = []
        for i in range(rng.randint(*p.turns)):
            size = lognormal(rng, p.context_median, 0.6, 4 * p.context_median) if i == 0 else \
                lognormal(rng, p.question_median, 0.6, 8 * p.question_median)
            turns.append(Turn(words(size), lognormal(rng, p.answer_median, 0.8, p.answer_cap),
                              rng.expovariate(1 / p.think_s)))
        out.append(Conversation(t, rng.choices(systems, weights)[0], turns))


def offered_load(p: Params, convs: list[Conversation]) -> float:
    """Busy slot-seconds asked of the fleet per second, over its slots (no cache hits assumed
    beyond the system prompt)."""
    turns = [t for c in convs for t in c.turns]
    per_turn = statistics.fmean(t.max_tokens for t in turns) * p.decode_ms / 1000
    rate = len(turns) / (p.warmup_s + p.measure_s)
    return rate * per_turn / (p.replicas * p.slots)


def live_prefix_tokens(p: Params, convs: list[Conversation]) -> float:
    """The mean number of tokens the conversations in progress have accumulated
    (system prompt, turns and answers so far) over the measured window, with
    answers taking their decode time: the KV working set the fleet's caches
    would need to hold every live conversation once."""
    step, totals = 0.1, []
    timelines = []
    for c in convs:
        t, length, points = c.start_s, p.system_tokens + 1, []
        for turn in c.turns:
            length += len(turn.question.split()) + 2
            points.append((t, length))
            t += turn.max_tokens * p.decode_ms / 1000
            length += turn.max_tokens
            points.append((t, length))
            t += turn.think_s
        timelines.append((c.start_s, t - c.turns[-1].think_s, points))
    t = p.warmup_s
    while t < p.warmup_s + p.measure_s:
        total = 0
        for start, end, points in timelines:
            if start <= t < end:
                total += max(n for at, n in points if at <= t)
        totals.append(total)
        t += step
    return statistics.fmean(totals) if totals else 0.0


def hit_bounds(p: Params, convs: list[Conversation]) -> tuple[float, float]:
    """``(system prompts alone, ceiling)``: the share of every turn's prompt tokens in full
    blocks of its system prompt (cached everywhere once seen), and the share in full blocks
    of the conversation's previous turn and answer (what a turn finds if its conversation
    is still cached where it lands; the first turn: the system prompt)."""
    system_blocks = (1 + p.system_tokens) // BLOCK * BLOCK
    prompts = system = ceiling = 0
    for c in convs:
        length, previous = 1 + p.system_tokens, 0
        for turn in c.turns:
            length += 1 + len(turn.question.split())
            prompt = length + 1  # the generation prompt, <assistant>
            prompts += prompt
            system += system_blocks
            ceiling += min(prompt - 1, max(system_blocks, previous // BLOCK * BLOCK))
            previous = prompt + turn.max_tokens
            length = previous
    return system / prompts, ceiling / prompts


# --- routing and measuring ---------------------------------------------------------------------


@dataclass
class Stats:
    ttft: list[float] = field(default_factory=list)
    completed: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    errors: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class Router:
    """The one place a call's pod is chosen (and counted in flight), in this process."""

    def __init__(self, strategy: Strategy, urls: list[str], p: Params):
        self.replicas = Replicas(strategy, urls, bound_factor=p.bound_factor, bound_floor=p.slots,
                                 rng=random.Random(p.seed))
        self.rng = random.Random(p.seed + 1)
        self.urls = urls

    def route(self, messages: list[dict[str, Any]]) -> tuple[str, Lease, Choice, dict[str, Any]]:
        """``(URL, lease, choice, extra headers)`` of one call."""
        choice = self.replicas.pick(chat_prefix_key(messages))
        lease = self.replicas.acquire(choice)
        url = choice.pod or self.rng.choice(self.urls)  # the Service: kube-proxy's random pick
        return url + "/v1/chat/completions", lease, choice, {}


class ApiRouter:
    """``--via-api``: every call goes to the real API, which picks the pod (``model``'s strategy)."""

    def __init__(self, api: str, model: str):
        self.url = api + "/v5/chat/completions"
        self.model = f"launch/{model}"
        self.headers = {"x-api-key": DEV_API_KEY}
        self.nothing = Replicas("service")

    def route(self, messages: list[dict[str, Any]]) -> tuple[str, Lease, Choice, dict[str, Any]]:
        return self.url, self.nothing.acquire(None), Choice(None, "service"), self.headers


async def one_call(session: ClientSession, router: Router | ApiRouter, messages: list[dict[str, Any]],
                   max_tokens: int, stats: Optional[Stats]) -> str:
    url, lease, choice, headers = router.route(messages)
    sent = time.perf_counter()
    first: Optional[float] = None
    text: list[str] = []
    usage: dict[str, Any] = {}
    model = getattr(router, "model", "sim")
    with lease:
        async with session.post(url, headers=headers,
                                json={"model": model, "messages": messages, "max_tokens": max_tokens,
                                      "stream": True}) as resp:
            resp.raise_for_status()
            async for line in resp.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                data = json.loads(line[6:])
                delta = data["choices"][0]["delta"].get("content")
                if delta:
                    first = first or time.perf_counter()
                    text.append(delta)
                usage = data.get("usage") or usage
    if stats is not None:
        stats.ttft.append((first or time.perf_counter()) - sent)
        stats.completed += 1
        stats.prompt_tokens += usage.get("prompt_tokens", 0)
        stats.cached_tokens += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        stats.outcomes[choice.outcome] = stats.outcomes.get(choice.outcome, 0) + 1
    return "".join(text).strip()


async def converse(session: ClientSession, router: Router | ApiRouter, conv: Conversation, t0: float, p: Params,
                   stats: Stats) -> None:
    await asyncio.sleep(max(0.0, t0 + conv.start_s - time.perf_counter()))
    messages: list[dict[str, Any]] = [{"role": "system", "content": conv.system}]
    end = t0 + p.warmup_s + p.measure_s
    for turn in conv.turns:
        now = time.perf_counter()
        if now >= end:
            return
        messages.append({"role": "user", "content": turn.question})
        measured = now >= t0 + p.warmup_s
        try:
            answer = await one_call(session, router, messages, turn.max_tokens, stats if measured else None)
        except Exception:  # noqa: BLE001 - counted, the conversation ends
            stats.errors += 1
            return
        messages.append({"role": "assistant", "content": answer})
        if time.perf_counter() + turn.think_s >= end:
            return
        await asyncio.sleep(turn.think_s)


async def run_strategy(strategy: Strategy, p: Params, convs: list[Conversation], fleet: Fleet,
                       api: Optional[Api] = None, model: str = "") -> Stats:
    """One strategy on its own (fresh) fleet: in this process, or through ``api`` as ``model``."""
    stats = Stats()
    if api is None:
        await drive(Router(strategy, fleet.urls, p), p, convs, stats)
        return stats
    measured = asyncio.ensure_future(routing_counts_at(api.url, model, time.perf_counter() + 0.05 + p.warmup_s))
    await drive(ApiRouter(api.url, model), p, convs, stats)
    before = await measured
    after = await routing_counts(api.url, model)
    stats.outcomes = {k: int(after.get(k, 0) - before.get(k, 0)) for k in after}
    return stats


async def run_all(p: Params, strategies: list[Strategy], repeats: int, via_api: bool) -> list[dict[str, Stats]]:
    """Every repeat (seed ``p.seed + r``), every strategy in turn on a fleet of its own, so each
    starts with cold caches.  Through the API, one ``serve`` process answers for all of them:
    a model per (strategy, repeat), its fleet as the model's ``--backend`` list."""
    results: list[dict[str, Stats]] = []
    async with AsyncExitStack() as stack:
        fleets = {(r, s): await stack.enter_async_context(Fleet(p)) for r in range(repeats) for s in strategies}
        api: Optional[Api] = None
        if via_api:
            backends: dict[str, tuple[Strategy, list[str]]] = {}
            for (r, s), fleet in fleets.items():
                if s == "service":  # the Service: a kube-proxy stand-in, a random replica per call
                    proxy = await stack.enter_async_context(KubeProxy(fleet.urls, p.seed + r))
                    backends[model_name(s, r)] = (s, [proxy.url])
                else:
                    backends[model_name(s, r)] = (s, fleet.urls)
            api = stack.enter_context(Api(p, backends))
        for r in range(repeats):
            pr = replace(p, seed=p.seed + r)
            convs = workload(pr)
            results.append({s: await run_strategy(s, pr, convs, fleets[(r, s)], api, model_name(s, r))
                            for s in strategies})
    return results


async def drive(router: Router | ApiRouter, p: Params, convs: list[Conversation], stats: Stats) -> None:
    async with ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=120)) as session:
        t0 = time.perf_counter() + 0.05
        await asyncio.gather(*(converse(session, router, c, t0, p, stats) for c in convs))


# --- --via-api: the real API in front of the fleet ---------------------------------------------------


def model_name(strategy: str, repeat: int) -> str:
    return f"sim-{strategy}-{repeat + 1}"


def stack_doc(p: Params, models: dict[str, Strategy]) -> dict[str, Any]:
    """A stack with one VLLM chat model per (strategy, repeat) (``inference.routing``): ``per_worker``
    is a replica's slots (the load bound's floor, as in the in-process router), and ``max_workers``
    only sets the API's in-flight cap (``per_worker x max_workers``) high enough never to answer 429:
    the replicas queue what they cannot run, as vLLM does."""
    bundle = {"registry": "ghcr.io/sgp-infra", "image": "sim", "tag": "1", "command": ["serve"],
              "healthcheck_route": "/health", "predict_route": "/v1/chat/completions",
              "streaming_predict_route": "/v1/chat/completions", "readiness_initial_delay_seconds": 5}
    template = {"endpoint_type": "STREAMING", "model_type": "CHAT_COMPLETION", "endpoint_protocol": "VLLM",
                "vendor_configuration": {"vendor": "LAUNCH", "bundle_config": bundle,
                                         "endpoint_config": {"cpus": 1, "memory": "1Gi", "min_workers": 1,
                                                             "max_workers": 1000, "per_worker": p.slots}}}
    doc = {name: {"model_type": "CHAT_COMPLETION", "model_template_id": "sim",
                  "inference": {"routing": strategy, "load_bound_factor": p.bound_factor}}
           for name, strategy in models.items()}
    return {"config": {"sgp-infra:accountId": "bench", "sgp-infra:namespace": "bench",
                       "sgp-infra:gpuProfile": "eks", "sgp-infra:templates": {"sim": template},
                       "sgp-infra:models": doc}}


class Api:
    """``python -m sgp_infra serve`` on a free loopback port, each model's replicas as its ``--backend`` URLs."""

    def __init__(self, p: Params, backends: dict[str, tuple[Strategy, list[str]]]):
        self.p, self.backends = p, backends
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.dir = tempfile.TemporaryDirectory(prefix="bench-routing-")

    def __enter__(self) -> Api:
        stack = Path(self.dir.name) / "Pulumi.bench.yaml"
        stack.write_text(json.dumps(stack_doc(self.p, {m: s for m, (s, _) in self.backends.items()})))  # JSON is YAML
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k not in ("SGP_INFRA_API_KEYS", "PROMETHEUS_MULTIPROC_DIR")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sgp_infra", "serve", "--config-file", str(stack), "--port", str(port),
             "--status", "none", "--no-access-log", "--log-level", "warning", "--workers", "1",
             *(a for name, (_, urls) in self.backends.items() for a in ("--backend", f"{name}={','.join(urls)}"))],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.__exit__()
                raise RuntimeError(f"the API did not start: {err[-2000:]}")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.dir.cleanup()


class KubeProxy:
    """What the Service does for ``service``: each call to a uniformly random replica (one more
    loopback hop, streamed through), so the API's ``service`` strategy is compared fairly."""

    def __init__(self, urls: list[str], seed: int):
        self.urls = urls
        self.rng = random.Random(seed + 2)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = self.rng.choice(self.urls) + request.path
        async with self.session.post(target, data=body, headers={"content-type": "application/json"}) as up:
            response = web.StreamResponse(status=up.status,
                                          headers={"content-type": up.headers.get("content-type", "")})
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def __aenter__(self) -> KubeProxy:
        self.session = ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=120))
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
        await self.session.close()


async def routing_counts(api: str, model: str) -> dict[str, float]:
    """The API's ``sgp_infra_model_routing_total`` for ``model``, by outcome."""
    async with ClientSession() as session:
        async with session.get(api + "/metrics") as r:
            text = await r.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sgp_infra_model_routing_total" and sample.labels.get("model") == model:
                out[sample.labels["outcome"]] = sample.value
    return out


async def routing_counts_at(api: str, model: str, when: float) -> dict[str, float]:
    await asyncio.sleep(max(0.0, when - time.perf_counter()))
    return await routing_counts(api, model)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def hit_rate(s: Stats) -> float:
    return s.cached_tokens / s.prompt_tokens if s.prompt_tokens else float("nan")


def pooled(runs: list[dict[str, Stats]], strategy: str) -> Stats:
    """One strategy's measurements over every repeat, as one sample."""
    out = Stats()
    for run in runs:
        s = run[strategy]
        out.ttft += s.ttft
        out.completed += s.completed
        out.prompt_tokens += s.prompt_tokens
        out.cached_tokens += s.cached_tokens
        out.errors += s.errors
        for k, v in s.outcomes.items():
            out.outcomes[k] = out.outcomes.get(k, 0) + v
    return out


#: The targets of issue 16, as ``(label, strategy, measure, comparison, bound)``; every ratio is to ``service``.
TARGETS = (("prefix-affinity cache hit rate", "prefix-affinity", "hit", ">=", 2.0),
           ("prefix-affinity TTFT p50", "prefix-affinity", "p50", "<=", 0.5),
           ("least-load TTFT p99", "least-load", "p99", "<=", 0.7))


def ratio(run: dict[str, Stats], strategy: str, measure: str) -> float:
    """``strategy``'s ``measure`` (``hit``, ``p50``, ``p99``) over ``service``'s in one run."""
    def value(s: Stats) -> float:
        return hit_rate(s) if measure == "hit" else pct(s.ttft, .5 if measure == "p50" else .99)
    base = value(run["service"])
    return value(run[strategy]) / base if base else float("inf")


def report(p: Params, runs: list[dict[str, Stats]], ceiling: float) -> list[str]:
    """The strategies over every repeat pooled, then each target's ratio per repeat and their median.

    ``ceiling`` is the hit rate of a router that always found a turn's whole
    conversation cached; over ``service``'s measured hit rate it is the most
    any router could reach on this workload, which says whether a missed
    hit-rate target is the router's or the workload's.
    """
    lines = [f"all {len(runs)} repeat(s) pooled:",
             f"{'strategy':<16} {'TTFT p50':>9} {'TTFT p99':>9} {'req/s':>7} {'cache hit':>9} "
             f"{'hits/spills':>12} {'errors':>6}"]
    for name in runs[0]:
        s = pooled(runs, name)
        spills = f"{s.outcomes.get('hit', 0)}/{s.outcomes.get('spill', 0)}" if name == "prefix-affinity" else "-"
        lines.append(f"{name:<16} {pct(s.ttft, .5) * 1000:>7.1f}ms {pct(s.ttft, .99) * 1000:>7.1f}ms "
                     f"{s.completed / (p.measure_s * len(runs)):>7.1f} {hit_rate(s):>9.1%} {spills:>12} "
                     f"{s.errors:>6}")
    lines.append("")
    lines.append(f"vs service (median of {len(runs)} repeat(s); each repeat's ratio in brackets)")
    for label, strategy, measure, op, bound in TARGETS:
        if strategy not in runs[0]:
            continue
        each = [ratio(run, strategy, measure) for run in runs]
        med = statistics.median(each)
        met = med >= bound if op == ">=" else med <= bound
        lines.append(f"{label:<31} {med:>6.2f}x  {f'{op} {bound:g}x':<8} {'met' if met else 'not met':<8}"
                     f"[{', '.join(f'{r:.2f}' for r in each)}]")
    base = hit_rate(pooled(runs, "service"))
    if base:
        lines.append(f"(no router could reach more than {ceiling / base:.2f}x service's hit rate here: the "
                     f"{ceiling:.0%} ceiling over service's {base:.1%})")
        if "prefix-affinity" in runs[0] and ceiling > base:
            hit = hit_rate(pooled(runs, "prefix-affinity"))
            lines.append(f"(prefix-affinity's {hit:.1%} is {hit / ceiling:.0%} of that ceiling and "
                         f"{(hit - base) / (ceiling - base):.0%} of the gain over service that any router "
                         f"could make)")
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    defaults = Params()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few seconds at a smaller load (smoke run)")
    parser.add_argument("--replicas", type=int, default=defaults.replicas)
    parser.add_argument("--slots", type=int, default=defaults.slots, help="sequences a replica runs at once")
    parser.add_argument("--kv-tokens", type=int, default=defaults.kv_tokens,
                        help="a replica's KV cache: running sequences and the prefix cache")
    parser.add_argument("--prefill-ms", type=float, default=defaults.prefill_ms, help="per uncached prompt token")
    parser.add_argument("--decode-ms", type=float, default=defaults.decode_ms, help="per output token")
    parser.add_argument("--rate", type=float, default=None, help="conversations started per second")
    parser.add_argument("--warmup", type=float, default=None, help="seconds not measured")
    parser.add_argument("--seconds", type=float, default=None, help="seconds measured per strategy")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs of every strategy, seeds SEED, SEED+1, ...; the median ratio is reported")
    parser.add_argument("--bound-factor", type=float, default=defaults.bound_factor)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="comma-separated, 'service' first (the baseline)")
    parser.add_argument("--via-api", action="store_true",
                        help="send every call through the real API (one `serve` subprocess, each strategy's "
                             "fleet as a model's --backend URLs) instead of routing in this process")
    args = parser.parse_args(argv)
    p = Params(replicas=args.replicas, slots=args.slots, kv_tokens=args.kv_tokens, prefill_ms=args.prefill_ms,
               decode_ms=args.decode_ms, bound_factor=args.bound_factor, seed=args.seed,
               **(QUICK if args.quick else {}))
    if args.rate is not None:
        p.conversations_per_s = args.rate
    if args.warmup is not None:
        p.warmup_s = args.warmup
    if args.seconds is not None:
        p.measure_s = args.seconds
    if args.repeats is not None:
        p.repeats = args.repeats
    if p.repeats < 1:
        parser.error("--repeats must be at least 1")
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not strategies or strategies[0] != "service" or any(s not in STRATEGIES for s in strategies):
        parser.error(f"--strategies: 'service' first, then any of {', '.join(STRATEGIES[1:])}")
    convs = workload(p)
    turns = sum(len(c.turns) for c in convs)
    print(f"routing: {'through the API (serve --backend MODEL=URL1,...)' if args.via_api else 'in this process'}")
    print(f"fleet: {p.replicas} replicas x {p.slots} slots, KV cache {p.kv_tokens} tokens each, prefill "
          f"{p.prefill_ms} ms/token, decode {p.decode_ms} ms/token")
    print(f"workload (seed {p.seed}; {p.repeats} repeat(s), seeds {p.seed}..{p.seed + p.repeats - 1}): "
          f"{len(convs)} conversations ({turns} turns) over {p.warmup_s + p.measure_s:g} s; offered load "
          f"~{offered_load(p, convs):.0%} of the slots; {p.warmup_s:g} s warm-up, {p.measure_s:g} s measured "
          f"per strategy")
    live = live_prefix_tokens(p, convs)
    print(f"live conversation prefixes: ~{live / 1000:.0f}k tokens in all, ~{live / p.replicas / 1000:.1f}k per "
          f"replica when each conversation stays on one; KV cache per replica = "
          f"{p.kv_tokens / (live / p.replicas):.2f}x that")
    alone, ceiling = hit_bounds(p, convs)
    print(f"prefix-cache hit rate bounds: {alone:.0%} from the system prompts alone, {ceiling:.0%} if every turn "
          f"found its conversation cached (so at most {ceiling / alone:.1f}x the former)")
    runs = asyncio.run(run_all(p, strategies, p.repeats, args.via_api))  # type: ignore[arg-type]
    print("\n".join(report(p, runs, ceiling)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
