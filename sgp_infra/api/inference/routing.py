"""Picking a model's pod for one call: least-load, prefix affinity, or the Service.

Pure and synchronous: no I/O, no event loop, the clock and the random source
injectable.  The gateway keeps one :class:`Replicas` per model (a
:class:`Routing` holds them by object name), feeds it the ready pod addresses
(from :mod:`.endpoints` in a cluster, ``serve --backend MODEL=URL1,URL2``
locally) and, for each call::

    choice = replicas.pick(prefix_key(call), exclude=tried)
    if choice.pod is None: ...            # "service": use the Service URL
    with replicas.acquire(choice) as lease:   # counted in flight on that pod
        ...send to choice.pod...
        lease.failed()                    # refused / reset / 503 before any byte:
                                          # skip the pod for a while, retry elsewhere

Strategies (``docs/inference.md``, "Routing across replicas"):

* ``least-load``: the candidate pod with the fewest calls in flight from this
  process; ties broken at random, so idle pods share the work.
* ``prefix-affinity``: consistent hashing with bounded loads (CHWBL, Mirrokni,
  Thorup and Zadimoghaddam 2018; KubeAI's ``PrefixHash``).  Every pod owns
  ``vnodes`` points on a 64-bit ring; the call's prefix key is hashed onto the
  ring and the walk takes the first pod whose load is below
  ``max(bound_floor, ceil(bound_factor * (total_in_flight + 1) / n))``, so a
  hot prefix spills to the next pods instead of queueing on one.  The floor
  (the model's ``per_worker``, the calls one pod serves at once) keeps a
  lightly loaded fleet from spilling: with a call or two in flight the
  relative bound alone is 1, and a pod already serving one call would pass
  the next to a pod without its cache, though it has room for both.
* ``service``: no pick; the call goes to the model's Service (kube-proxy picks).

The ring is a function of the pod set alone (blake2b of the addresses, never
Python's salted ``hash()``), so every API replica, and every restart, maps a
prefix to the same pod; a pod joining or leaving moves only its own share of
keys.  Loads, on the other hand, are this process's own calls: several API
replicas each see only a part of the load (see the docs for what that costs).

A pod that failed (refused, reset, or a 503 before any byte) is skipped for
``skip_seconds``; when every candidate is being skipped the skips are ignored,
since the Service would send the call to the same pods anyway.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, Iterator, Literal, Mapping, Optional, Sequence

from .protocols import Call, content_text

Strategy = Literal["least-load", "prefix-affinity", "service"]
STRATEGIES: tuple[Strategy, ...] = ("least-load", "prefix-affinity", "service")

#: How a pick was made, for the hits-vs-spills counter: ``hit`` (the key's
#: own ring pod), ``spill`` (a later ring pod: the first was over the bound,
#: skipped or excluded), ``least-load``, ``service`` (no pod: use the
#: Service; also when no pod address is known) and ``exhausted`` (every known
#: pod is in ``exclude``: a retry has nowhere new to go).
Outcome = Literal["hit", "spill", "least-load", "service", "exhausted"]

DEFAULT_BOUND_FACTOR = 1.25
DEFAULT_SKIP_SECONDS = 5.0
#: Points per pod on the ring: with 128 the share of keys a pod owns is within
#: about ±10% of 1/n for a handful of pods (KubeAI uses 256).
DEFAULT_VNODES = 128
#: Characters of a completion prompt hashed for affinity (KubeAI's default is 100;
#: 256 covers a typical instruction header without reaching the varying part).
DEFAULT_PREFIX_CHARS = 256
_CHAT_TYPES = frozenset({"completion", "chat_completion"})
_LEADING_ROLES = frozenset({"system", "developer"})


def default_strategy(model_type: str) -> Strategy:
    """``prefix-affinity`` for completion and chat models (their pods keep a KV
    cache worth returning to), ``least-load`` for every other model type."""
    return "prefix-affinity" if model_type.lower() in _CHAT_TYPES else "least-load"


def check_strategy(value: str) -> Strategy:
    """``value`` as a :data:`Strategy`; ``ValueError`` naming the choices otherwise."""
    if value not in STRATEGIES:
        raise ValueError(f"unknown routing strategy {value!r} (expected one of {', '.join(STRATEGIES)})")
    return value  # type: ignore[return-value]


def stable_hash(data: bytes) -> int:
    """A 64-bit hash that is the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


# --- prefix keys --------------------------------------------------------------------------


def completion_prefix_key(prompt: str, chars: int = DEFAULT_PREFIX_CHARS) -> bytes:
    """The bytes hashed for a completion: the prompt's first ``chars`` characters."""
    return prompt[:chars].encode("utf-8", "surrogatepass")


def chat_prefix_key(messages: Sequence[Mapping[str, Any]]) -> bytes:
    """The key of a chat: a 16-byte hash of each leading system/developer message and of
    the first user message (or, with no user message, the first other one), in order.

    Every turn of one conversation re-sends those, so all its turns hash the same and
    return to the pod holding the conversation's KV cache; two conversations over the
    same system prompt differ by their first question, so they spread over the pods
    (the shared system prompt is cheap to cache everywhere).  Each message is hashed
    whole, however long: agent system prompts with tool definitions run to tens of
    thousands of characters, and a key cut inside them would be the same for every
    conversation, piling them onto one pod until the load bound scatters their turns.
    Each part hashes its role and content separated by a NUL byte, so moving text
    between messages or roles changes the key.
    """
    parts: list[bytes] = []
    for message in messages:
        role = str(message.get("role") or "user")
        text = f"{role}\x00{content_text(message.get('content'))}"
        parts.append(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest())
        if role not in _LEADING_ROLES:
            break
    return b"".join(parts)


def prefix_key(call: Call, *, prompt_chars: int = DEFAULT_PREFIX_CHARS) -> Optional[bytes]:
    """The affinity key of a parsed v4 or v5 call; ``None`` for embeddings and
    reranking (no prompt cache to return to: those route by load).

    A v4 chat's ``messages`` are its ``chat_history`` plus the prompt as the last
    user message, and a v5 chat's are its ``messages``: both keep the first user
    turn in place across turns.
    """
    if call.op == "chat":
        return chat_prefix_key(call.messages)
    if call.op == "completion":
        return completion_prefix_key(call.prompt, prompt_chars)
    return None


# --- the ring ----------------------------------------------------------------------------------


class Ring:
    """The consistent-hash ring of a pod set: ``vnodes`` points per pod.

    Built from the set alone (sorted, hashed with blake2b), so two processes
    with the same pods build the same ring.
    """

    def __init__(self, pods: Iterable[str], vnodes: int = DEFAULT_VNODES):
        if vnodes < 1:
            raise ValueError("vnodes must be at least 1")
        self.pods = frozenset(pods)
        points = sorted((stable_hash(f"{pod}#{i}".encode()), pod) for pod in sorted(self.pods) for i in range(vnodes))
        self._hashes = [h for h, _ in points]
        self._owners = [p for _, p in points]

    def walk(self, key: bytes) -> Iterator[str]:
        """The distinct pods met walking clockwise from ``key``'s hash (every pod once)."""
        if not self._owners:
            return
        start = bisect.bisect(self._hashes, stable_hash(key))
        seen: set[str] = set()
        n = len(self._owners)
        for i in range(n):
            pod = self._owners[(start + i) % n]
            if pod not in seen:
                seen.add(pod)
                yield pod
                if len(seen) == len(self.pods):
                    return

    def owner(self, key: bytes) -> Optional[str]:
        """The key's own pod (the first on the walk); ``None`` on an empty ring."""
        return next(self.walk(key), None)


# --- per-model state -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """A pick: ``pod`` (a base URL, no trailing slash) or ``None`` for the Service."""

    pod: Optional[str]
    outcome: Outcome

    @property
    def affinity_hit(self) -> Optional[bool]:
        """``True``/``False`` for a prefix-affinity pick (hit or spill), else ``None``."""
        return {"hit": True, "spill": False}.get(self.outcome)


class Lease:
    """One call counted in flight on a pod, from :meth:`Replicas.acquire` to
    :meth:`release` (idempotent; also on leaving a ``with`` block).  A lease
    for the Service (``pod is None``) counts nothing."""

    __slots__ = ("replicas", "pod", "released")

    def __init__(self, replicas: Replicas, pod: Optional[str]):
        self.replicas = replicas
        self.pod = pod
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            if self.pod is not None:
                self.replicas.release(self.pod)

    def failed(self, seconds: Optional[float] = None) -> None:
        """The pod refused, reset or answered 503 before any byte: skip it, then release."""
        if self.pod is not None:
            self.replicas.mark_failed(self.pod, seconds)
        self.release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def normalize_pod(url: str) -> str:
    """A pod base URL as the routing state keys it (no trailing slash)."""
    return url.rstrip("/")


class Replicas:
    """One model's pods as this process sees them: the ready set, calls in
    flight per pod, and the pods being skipped after a failure.

    ``clock`` (monotonic seconds) and ``rng`` are injectable for tests.
    """

    def __init__(self, strategy: Strategy = "least-load", pods: Iterable[str] = (), *,
                 bound_factor: float = DEFAULT_BOUND_FACTOR, bound_floor: int = 1,
                 skip_seconds: float = DEFAULT_SKIP_SECONDS, vnodes: int = DEFAULT_VNODES,
                 clock: Callable[[], float] = time.monotonic, rng: Optional[random.Random] = None):
        if bound_floor < 1:
            raise ValueError(f"bound_floor must be at least 1 (got {bound_floor})")
        if not bound_factor >= 1.0:  # also rejects NaN
            raise ValueError(f"bound_factor must be at least 1.0 (got {bound_factor}): below 1 the pods "
                             "together could not take the load")
        if skip_seconds < 0:
            raise ValueError("skip_seconds must not be negative")
        self.strategy = check_strategy(strategy)
        self.bound_factor = bound_factor
        self.bound_floor = bound_floor
        self.skip_seconds = skip_seconds
        self.vnodes = vnodes
        self.clock = clock
        self.rng = rng or random.Random()
        #: Calls in flight per pod; a pod that left keeps its entry until its last call ends,
        #: so a pod that comes back (a readiness flap) is not under-counted.
        self.in_flight: dict[str, int] = {}
        self._skip_until: dict[str, float] = {}
        self.ring = Ring((), vnodes)
        self.update(pods)

    # --- the pod set -------------------------------------------------------------------------

    @property
    def pods(self) -> frozenset[str]:
        return self.ring.pods

    def update(self, pods: Iterable[str]) -> bool:
        """Replace the ready pod set; ``True`` if it changed.  Only the ring
        points of pods that joined or left move."""
        new = frozenset(normalize_pod(p) for p in pods)
        if new == self.ring.pods:
            return False
        self.ring = Ring(new, self.vnodes)
        for pod in list(self._skip_until):
            if pod not in new:
                del self._skip_until[pod]
        for pod in list(self.in_flight):
            if pod not in new and self.in_flight[pod] <= 0:
                del self.in_flight[pod]
        return True

    # --- health ---------------------------------------------------------------------------------

    def mark_failed(self, pod: str, seconds: Optional[float] = None) -> None:
        """Skip ``pod`` for ``seconds`` (default ``skip_seconds``) from now."""
        pod = normalize_pod(pod)
        if pod in self.ring.pods:
            self._skip_until[pod] = self.clock() + (self.skip_seconds if seconds is None else seconds)

    def skipped(self, pod: str) -> bool:
        until = self._skip_until.get(normalize_pod(pod))
        if until is None:
            return False
        if self.clock() >= until:
            del self._skip_until[normalize_pod(pod)]
            return False
        return True

    # --- accounting -----------------------------------------------------------------------------

    def load(self, pod: str) -> int:
        return self.in_flight.get(pod, 0)

    def acquire(self, choice: Choice | str | None) -> Lease:
        """Count a call in flight on the chosen pod until the lease is released."""
        pod = choice.pod if isinstance(choice, Choice) else choice
        if pod is not None:
            pod = normalize_pod(pod)
            self.in_flight[pod] = self.in_flight.get(pod, 0) + 1
        return Lease(self, pod)

    def release(self, pod: str) -> None:
        """End one call on ``pod`` (prefer :meth:`Lease.release`, which does it once)."""
        n = self.in_flight.get(pod, 0) - 1
        if n > 0:
            self.in_flight[pod] = n
        elif pod in self.ring.pods:
            self.in_flight[pod] = 0
        else:
            self.in_flight.pop(pod, None)

    # --- picking --------------------------------------------------------------------------------

    def candidates(self, exclude: Collection[str] = ()) -> list[str]:
        """Pods a call may go to: not excluded and, unless every one is, not skipped."""
        pool = [p for p in self.ring.pods if p not in exclude]
        healthy = [p for p in pool if not self.skipped(p)]
        return healthy or pool

    def load_bound(self, candidates: Collection[str]) -> int:
        """``ceil(bound_factor * (in flight on the candidates + 1) / len(candidates))``, and
        at least ``bound_floor``: a pod at or above it passes the call on (CHWBL)."""
        total = sum(self.load(p) for p in candidates)
        return max(self.bound_floor, math.ceil(self.bound_factor * (total + 1) / len(candidates)))

    def pick(self, key: Optional[bytes] = None, exclude: Collection[str] = ()) -> Choice:
        """Where the next call goes.  ``key``: its prefix key (:func:`prefix_key`;
        ``None`` routes a prefix-affinity model by load).  ``exclude``: pods a
        retry has already tried.  Does not count the call: :meth:`acquire` does."""
        if self.strategy == "service" or not self.ring.pods:
            return Choice(None, "service")
        pool = self.candidates(exclude)
        if not pool:
            return Choice(None, "exhausted")
        if self.strategy == "prefix-affinity" and key is not None:
            return self._pick_ring(key, pool)
        return Choice(self._least_loaded(pool), "least-load")

    def _least_loaded(self, pool: Sequence[str]) -> str:
        low = min(self.load(p) for p in pool)
        tied = sorted(p for p in pool if self.load(p) == low)
        return tied[0] if len(tied) == 1 else self.rng.choice(tied)

    def _pick_ring(self, key: bytes, pool: Sequence[str]) -> Choice:
        allowed = set(pool)
        bound = self.load_bound(pool)
        first = True
        for pod in self.ring.walk(key):
            if pod in allowed and self.load(pod) < bound:
                return Choice(pod, "hit" if first else "spill")
            first = False
        # Unreachable while bound_factor >= 1 (some candidate is below the mean, and the floor
        # only raises the bound);
        # kept so a pick never fails.
        return Choice(self._least_loaded(pool), "spill")


class Routing:
    """Every model's :class:`Replicas`, by model object name (the Service name),
    with the settings they share.  :meth:`on_change` has the signature of the
    :mod:`.endpoints` callback."""

    def __init__(self, *, bound_factor: float = DEFAULT_BOUND_FACTOR, skip_seconds: float = DEFAULT_SKIP_SECONDS,
                 vnodes: int = DEFAULT_VNODES, clock: Callable[[], float] = time.monotonic,
                 rng: Optional[random.Random] = None):
        if not bound_factor >= 1.0:
            raise ValueError(f"bound_factor must be at least 1.0 (got {bound_factor})")
        self.bound_factor = bound_factor
        self.skip_seconds = skip_seconds
        self.vnodes = vnodes
        self.clock = clock
        self.rng = rng or random.Random()
        self.models: dict[str, Replicas] = {}
        self._pods: dict[str, frozenset[str]] = {}

    def replicas(self, name: str, strategy: Strategy = "least-load", bound_factor: Optional[float] = None,
                 skip_seconds: Optional[float] = None, bound_floor: int = 1) -> Replicas:
        """The model's state, created on first use; ``strategy``, ``bound_factor``,
        ``skip_seconds`` and ``bound_floor`` are the model's current ones (the catalogue's
        ``inference.routing``, ``load_bound_factor``, ``pod_skip_seconds`` and the model's
        ``per_worker``; ``None``: this Routing's default).  A catalogue update may change
        them; the counts, the skips under way and the ring stay."""
        bound = self.bound_factor if bound_factor is None else bound_factor
        skip = self.skip_seconds if skip_seconds is None else skip_seconds
        r = self.models.get(name)
        if r is None:
            r = self.models[name] = Replicas(strategy, self._pods.get(name, ()), bound_factor=bound,
                                             bound_floor=bound_floor, skip_seconds=skip, vnodes=self.vnodes,
                                             clock=self.clock, rng=self.rng)
            return r
        if r.bound_floor != bound_floor:
            if bound_floor < 1:
                raise ValueError(f"bound_floor must be at least 1 (got {bound_floor})")
            r.bound_floor = bound_floor
        if r.strategy != strategy:
            r.strategy = check_strategy(strategy)
        if r.bound_factor != bound:
            if not bound >= 1.0:
                raise ValueError(f"bound_factor must be at least 1.0 (got {bound})")
            r.bound_factor = bound
        if r.skip_seconds != skip:
            if skip < 0:
                raise ValueError("skip_seconds must not be negative")
            r.skip_seconds = skip
        return r

    def pods(self, name: str) -> frozenset[str]:
        """The model's known ready pods (empty: no endpoint information, use the Service)."""
        return self._pods.get(name, frozenset())

    def on_change(self, name: str, pods: frozenset[str]) -> None:
        """A model's ready pods changed (an empty set: no endpoint information, use the Service)."""
        self._pods[name] = frozenset(pods)
        r = self.models.get(name)
        if r is not None:
            r.update(pods)
