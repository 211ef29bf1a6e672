"""``routing``: the pod pick, as properties over pod sets and key sequences.

The ring must be a function of the pod set alone (so API replicas agree and a
pod joining or leaving moves only its share), the CHWBL bound must hold under
concurrent load, least-load must take a minimum, and a failed pod must be
skipped exactly until its skip expires.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api_helpers import make_catalog
from sgp_infra.api.inference.protocols import parse_v4, parse_v5_chat, parse_v5_completion
from sgp_infra.api.inference.routing import (
    Choice, Replicas, Ring, Routing, chat_prefix_key, check_strategy, completion_prefix_key, default_strategy,
    prefix_key)

pod_sets = st.sets(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=12).map(
    lambda ns: frozenset(f"http://10.0.{n // 256}.{n % 256}:8000" for n in ns))
keys = st.lists(st.binary(min_size=0, max_size=24), min_size=1, max_size=120)
FAST = settings(max_examples=60, deadline=None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def affinity(pods: frozenset[str], **kw: Any) -> Replicas:
    return Replicas("prefix-affinity", pods, rng=random.Random(0), **kw)


# --- prefix affinity ------------------------------------------------------------------------


@FAST
@given(pod_sets, keys, st.sampled_from([1.0, 1.25, 2.0]), st.sampled_from([1, 2, 8]))
def test_no_pod_exceeds_the_load_bound_under_concurrent_load(pods: frozenset[str], seq: list[bytes],
                                                             factor: float, floor: int) -> None:
    r = affinity(pods, bound_factor=factor, bound_floor=floor)
    for key in seq:  # acquire without release: every call is still running
        total = sum(r.in_flight.values())
        bound = max(floor, math.ceil(factor * (total + 1) / len(pods)))
        choice = r.pick(key)
        assert choice.pod in pods and r.load(choice.pod) < bound
        r.acquire(choice)
    assert max(r.in_flight.values()) <= max(floor, math.ceil(factor * len(seq) / len(pods)))


@FAST
@given(pod_sets, st.binary(max_size=24), st.integers(min_value=1, max_value=16))
def test_below_the_floor_a_hot_key_stays_on_its_own_pod(pods: frozenset[str], key: bytes, floor: int) -> None:
    r = affinity(pods, bound_floor=floor)
    picks = [r.acquire(r.pick(key)).pod for _ in range(floor)]
    assert picks == [r.ring.owner(key)] * floor  # every call a hit, though the other pods are idle
    if len(pods) > 1 and math.ceil(1.25 * (floor + 1) / len(pods)) <= floor:
        assert r.pick(key).outcome == "spill"  # the floor reached, and the relative bound no higher: spill


@FAST
@given(pod_sets, keys)
def test_a_key_goes_to_its_ring_owner_when_there_is_no_load(pods: frozenset[str], seq: list[bytes]) -> None:
    r = affinity(pods)
    for key in seq:
        choice = r.pick(key)
        assert choice == Choice(r.ring.owner(key), "hit") and choice.affinity_hit is True


@FAST
@given(pod_sets.filter(lambda p: len(p) >= 2), keys, st.data())
def test_removing_a_pod_remaps_only_the_keys_it_held(pods: frozenset[str], seq: list[bytes], data: Any) -> None:
    gone = data.draw(st.sampled_from(sorted(pods)))
    before, after = affinity(pods), affinity(pods - {gone})
    for key in seq:
        old, new = before.pick(key).pod, after.pick(key).pod
        assert new != gone
        if old != gone:
            assert new == old


@FAST
@given(pod_sets, keys)
def test_adding_a_pod_moves_keys_only_to_it(pods: frozenset[str], seq: list[bytes]) -> None:
    new_pod = "http://10.9.9.9:8000"
    r = affinity(pods)
    owners = {key: r.pick(key).pod for key in seq}
    assert r.update(pods | {new_pod})
    for key in seq:
        assert r.pick(key).pod in (owners[key], new_pod)


@FAST
@given(pod_sets, keys)
def test_the_ring_is_the_same_in_two_instances(pods: frozenset[str], seq: list[bytes]) -> None:
    a = Replicas("prefix-affinity", sorted(pods), rng=random.Random(1))
    b = Replicas("prefix-affinity", sorted(pods, reverse=True), rng=random.Random(2), skip_seconds=9)
    assert [a.pick(k).pod for k in seq] == [b.pick(k).pod for k in seq]
    assert [list(Ring(pods).walk(k)) for k in seq] == [list(Ring(set(pods)).walk(k)) for k in seq]


def test_the_ring_spreads_keys_over_every_pod() -> None:
    pods = frozenset(f"http://10.0.0.{i}:8000" for i in range(4))
    ring = Ring(pods)
    owned = [ring.owner(f"conversation {i}".encode()) for i in range(2000)]
    shares = {pod: owned.count(pod) / len(owned) for pod in pods}
    assert all(0.15 < share < 0.35 for share in shares.values()), shares
    assert sorted(ring.walk(b"x")) == sorted(pods)


def test_a_hot_prefix_spills_to_the_next_ring_pod_and_says_so() -> None:
    pods = frozenset(f"http://10.0.0.{i}:8000" for i in range(4))
    r = affinity(pods)
    walk = list(r.ring.walk(b"hot"))
    picks = []
    for _ in range(12):  # twelve concurrent calls with one prefix
        picks.append(r.pick(b"hot"))
        r.acquire(picks[-1])
    assert picks[0] == Choice(walk[0], "hit")
    assert {c.outcome for c in picks} == {"hit", "spill"}
    assert all(c.affinity_hit is (c.pod == walk[0]) for c in picks)
    assert r.load(walk[0]) < 12 and r.load(walk[1]) > 0  # the owner took its share, the next one the rest


def test_released_calls_lower_the_load_and_the_key_comes_home() -> None:
    pods = frozenset(f"http://10.0.0.{i}:8000" for i in range(3))
    r = affinity(pods)
    owner = r.ring.owner(b"k")
    leases = [r.acquire(r.pick(b"k")) for _ in range(6)]
    assert r.pick(b"k").pod != owner
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert all(n == 0 for n in r.in_flight.values())
    assert r.pick(b"k") == Choice(owner, "hit")


def test_prefix_affinity_without_a_key_routes_by_load() -> None:
    r = affinity(frozenset({"http://a:1", "http://b:1"}))
    r.acquire("http://a:1")
    assert r.pick(None) == Choice("http://b:1", "least-load")


# --- least load ---------------------------------------------------------------------------------


@FAST
@given(pod_sets, st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=50)), max_size=80),
       st.integers(min_value=0, max_value=2**32))
def test_least_load_picks_a_minimum(pods: frozenset[str], ops: list[tuple[bool, int]], seed: int) -> None:
    r = Replicas("least-load", pods, rng=random.Random(seed))
    leases = []
    for start, n in ops:
        if start or not leases:
            choice = r.pick(b"ignored")
            assert choice.outcome == "least-load"
            assert r.load(choice.pod) == min(r.load(p) for p in pods)
            leases.append(r.acquire(choice))
        else:
            leases.pop(n % len(leases)).release()
    assert sum(r.in_flight.values()) == len(leases)


def test_least_load_breaks_ties_at_random() -> None:
    pods = frozenset(f"http://10.0.0.{i}:8000" for i in range(4))
    r = Replicas("least-load", pods, rng=random.Random(7))
    assert {r.pick().pod for _ in range(200)} == pods


def test_least_load_avoids_a_busy_pod() -> None:
    r = Replicas("least-load", ["http://a:1", "http://b:1"], rng=random.Random(0))
    with r.acquire("http://a:1"), r.acquire("http://a:1"):
        assert {r.pick().pod for _ in range(20)} == {"http://b:1"}
    assert r.in_flight == {"http://a:1": 0}


# --- health and retries ---------------------------------------------------------------------------


@FAST
@given(pod_sets.filter(lambda p: len(p) >= 2), keys, st.sampled_from(["least-load", "prefix-affinity"]), st.data())
def test_a_skipped_pod_is_not_picked_until_its_skip_expires(pods: frozenset[str], seq: list[bytes], strategy: str,
                                                           data: Any) -> None:
    clock = Clock()
    r = Replicas(strategy, pods, clock=clock, skip_seconds=5.0, rng=random.Random(0))  # type: ignore[arg-type]
    bad = data.draw(st.sampled_from(sorted(pods)))
    r.acquire(bad).failed()
    assert r.load(bad) == 0
    clock.now += 4.9
    assert all(r.pick(k).pod != bad for k in seq)
    clock.now += 0.1
    if strategy == "prefix-affinity":
        owned = [k for k in seq if r.ring.owner(k) == bad]
        assert all(r.pick(k) == Choice(bad, "hit") for k in owned)
    else:
        assert bad in {r.pick().pod for _ in range(200)}


def test_a_retry_excludes_the_pods_it_tried_and_then_is_exhausted() -> None:
    pods = ["http://a:1", "http://b:1", "http://c:1"]
    r = affinity(frozenset(pods))
    tried: set[str] = set()
    for _ in pods:
        choice = r.pick(b"key", exclude=tried)
        assert choice.pod not in tried and choice.pod is not None
        tried.add(choice.pod)
    assert r.pick(b"key", exclude=tried) == Choice(None, "exhausted")


def test_when_every_pod_is_skipped_the_skips_are_ignored() -> None:
    r = Replicas("least-load", ["http://a:1", "http://b:1"], clock=Clock(), rng=random.Random(0))
    r.mark_failed("http://a:1")
    r.mark_failed("http://b:1/")
    assert r.pick().pod in {"http://a:1", "http://b:1"}


def test_the_service_strategy_and_an_unknown_pod_set_use_the_service() -> None:
    assert Replicas("service", ["http://a:1"]).pick(b"k") == Choice(None, "service")
    assert Replicas("prefix-affinity").pick(b"k") == Choice(None, "service")
    lease = Replicas("service").acquire(Choice(None, "service"))
    lease.failed()
    assert lease.released


def test_pods_leaving_keep_their_calls_counted_until_they_end() -> None:
    r = Replicas("least-load", ["http://a:1", "http://b:1"], rng=random.Random(0))
    lease = r.acquire("http://a:1")
    r.update(["http://b:1"])
    assert r.in_flight["http://a:1"] == 1  # still running there
    r.update(["http://a:1", "http://b:1"])  # a readiness flap: back, with its call
    assert r.pick().pod == "http://b:1"
    r.update(["http://b:1"])
    lease.release()
    assert "http://a:1" not in r.in_flight
    assert not r.update(["http://b:1/"])


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="bound_factor"):
        Replicas("prefix-affinity", bound_factor=0.9)
    with pytest.raises(ValueError, match="bound_floor"):
        Replicas("prefix-affinity", bound_floor=0)
    with pytest.raises(ValueError, match="bound_factor"):
        Replicas("prefix-affinity", bound_factor=float("nan"))
    with pytest.raises(ValueError, match="least-load, prefix-affinity, service"):
        check_strategy("round-robin")
    with pytest.raises(ValueError, match="skip_seconds"):
        Replicas("least-load", skip_seconds=-1)


def test_routing_keeps_one_state_per_model_and_takes_endpoint_changes() -> None:
    routing = Routing(rng=random.Random(0))
    routing.on_change("llama", frozenset({"http://a:1"}))
    r = routing.replicas("llama", "prefix-affinity")
    assert r.pods == {"http://a:1"} and routing.replicas("llama", "prefix-affinity") is r
    routing.on_change("llama", frozenset({"http://a:1", "http://b:1"}))
    assert r.pods == {"http://a:1", "http://b:1"}
    assert routing.replicas("llama", "least-load") is r and r.strategy == "least-load"
    routing.on_change("llama", frozenset())
    assert r.pick(b"k") == Choice(None, "service")
    assert default_strategy("CHAT_COMPLETION") == "prefix-affinity" == default_strategy("completion")
    assert default_strategy("EMBEDDING") == "least-load" == default_strategy("generic")


# --- prefix keys ------------------------------------------------------------------------------------


SYSTEM = {"role": "system", "content": "You are a terse assistant."}


def test_every_turn_of_a_chat_has_the_same_key_and_conversations_differ() -> None:
    turn1 = [SYSTEM, {"role": "user", "content": "What is a KV cache?"}]
    turn2 = turn1 + [{"role": "assistant", "content": "Memory."}, {"role": "user", "content": "Say more."}]
    other = [SYSTEM, {"role": "user", "content": "What is a ring?"}]
    assert chat_prefix_key(turn1) == chat_prefix_key(turn2) != chat_prefix_key(other)
    parts = [SYSTEM, {"role": "user", "content": [{"type": "text", "text": "What is a KV cache?"}]}]
    assert chat_prefix_key(parts) == chat_prefix_key(turn1)
    assert chat_prefix_key([{"role": "system", "content": "ab"}]) != chat_prefix_key(
        [{"role": "system", "content": "a"}, {"role": "system", "content": "b"}])


def test_a_long_shared_system_prompt_still_spreads_conversations_by_their_first_question() -> None:
    tools = {"role": "system", "content": "You can call these tools: " + "{\"name\": \"tool\"} " * 3000}
    first = [tools, {"role": "user", "content": "Book a flight."}]
    assert len(tools["content"]) > 50_000
    assert chat_prefix_key(first) != chat_prefix_key([tools, {"role": "user", "content": "Book a hotel."}])
    assert chat_prefix_key(first) == chat_prefix_key(first + [{"role": "assistant", "content": "Done."},
                                                              {"role": "user", "content": "Thanks."}])
    longer = {"role": "system", "content": tools["content"] + " One more tool."}
    assert chat_prefix_key(first) != chat_prefix_key([longer, first[1]])  # hashed whole, not cut


def test_completion_keys_are_the_prompt_head() -> None:
    head = "x" * 256
    assert completion_prefix_key(head + "one") == completion_prefix_key(head + "two") == head.encode()
    assert completion_prefix_key("short", chars=3) == b"sho"


def test_keys_from_parsed_v4_and_v5_calls() -> None:
    model = make_catalog(extra_acme=0, extra_other=0).models["echo"]  # v4, no required request parameters
    v4_first = parse_v4("chat", {"prompt": "What is a KV cache?", "chat_history": []}, model)
    v4_next = parse_v4("chat", {"prompt": "Say more.", "chat_history": [
        {"role": "user", "content": "What is a KV cache?"}, {"role": "assistant", "content": "Memory."}]}, model)
    v5_next = parse_v5_chat({"messages": [{"role": "user", "content": "What is a KV cache?"},
                                          {"role": "assistant", "content": "Memory."},
                                          {"role": "user", "content": "Say more."}]}, "m")
    assert prefix_key(v4_first) == prefix_key(v4_next) == prefix_key(v5_next) is not None
    v4_completion = parse_v4("completion", {"prompt": "p" * 300}, model)
    v5_completion = parse_v5_completion({"prompt": ["p" * 300 + "tail"]}, "m")
    assert prefix_key(v4_completion) == prefix_key(v5_completion) == b"p" * 256
    assert prefix_key(parse_v4("embedding", {"texts": ["a"]}, model)) is None

