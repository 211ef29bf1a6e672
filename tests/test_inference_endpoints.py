"""``endpoints``: EndpointSlices through a fake Kubernetes API on loopback, and ``--backend`` lists.

The fake answers the list and the watch (``?watch=true``, JSON lines from a
resourceVersion) the way the API server does, so the real kubernetes-asyncio
calls run: slices added, changed and removed change the reported pod sets,
not-ready endpoints are left out, a ``410 Gone`` and a dropped connection
re-list, and slices of other Services are ignored.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from typing import Any, AsyncIterator, Callable, Optional

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from kubernetes_asyncio.client import Configuration

from api_helpers import running
from sgp_infra.api.inference.endpoints import (
    SLICE_SELECTOR, EndpointSliceWatcher, StaticEndpoints, parse_backend_urls, slice_pods)
from sgp_infra.api.inference.routing import Replicas, Routing

NS = "sgp-dev"
PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"


def endpoint_slice(name: str, service: str, endpoints: list[tuple[str, Optional[bool]]], port: int = 8000,
                   port_name: str = "http") -> dict[str, Any]:
    def one(ip: str, ready: Optional[bool]) -> dict[str, Any]:
        out: dict[str, Any] = {"addresses": [ip], "targetRef": {"kind": "Pod", "name": f"pod-{ip}"}}
        if ready is not None:
            out["conditions"] = {"ready": ready, "serving": ready, "terminating": not ready}
        return out

    ports = [{"name": port_name, "port": port, "protocol": "TCP"}]
    if port_name == "http":  # another port first: "http" is found by name (otherwise the first port is used)
        ports.insert(0, {"name": "metrics", "port": 9100, "protocol": "TCP"})
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [one(ip, ready) for ip, ready in endpoints],
            "ports": ports}


class FakeKube:
    """EndpointSlices with resourceVersions and an event log, shared with the server thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version = 100
        self.objects: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.selectors: list[str] = []
        self.lists = 0
        self.expire_next_watch = False
        self.drop_next_watch = False

    def put(self, obj: dict[str, Any]) -> None:
        with self.lock:
            self.version += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.version)
            kind = "MODIFIED" if obj["metadata"]["name"] in self.objects else "ADDED"
            self.objects[obj["metadata"]["name"]] = obj
            self.events.append((self.version, kind, obj))

    def delete(self, name: str) -> None:
        with self.lock:
            self.version += 1
            obj = self.objects.pop(name)
            self.events.append((self.version, "DELETED", obj))

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get(PATH)
        async def endpointslices(request: Request) -> Any:
            q = request.query_params
            self.selectors.append(q.get("labelSelector", ""))
            if q.get("watch") not in ("true", "True", "1"):
                with self.lock:
                    self.lists += 1
                    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                            "metadata": {"resourceVersion": str(self.version)},
                            "items": list(self.objects.values())}
            since = int(q.get("resourceVersion") or 0)
            limit = min(float(q.get("timeoutSeconds") or 5), 5.0)
            return StreamingResponse(self._events(since, limit), media_type="application/json")

        return app

    async def _events(self, since: int, limit: float) -> AsyncIterator[bytes]:
        if self.expire_next_watch:
            self.expire_next_watch = False
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
                      "message": f"too old resource version: {since}"}
            yield json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"
            return
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self.lock:
                fresh = [e for e in self.events if e[0] > since]
            for version, kind, obj in fresh:
                since = version
                yield json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            if self.drop_next_watch:
                self.drop_next_watch = False
                raise ConnectionResetError("dropped")  # the server cuts the stream mid-watch
            await asyncio.sleep(0.02)


class Seen:
    """The callback's view: the last pod set per Service and every call."""

    def __init__(self) -> None:
        self.pods: dict[str, frozenset[str]] = {}
        self.calls: list[tuple[str, frozenset[str]]] = []

    def __call__(self, service: str, pods: frozenset[str]) -> None:
        self.pods[service] = pods
        self.calls.append((service, pods))


async def until(check: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw: {what}")
        await asyncio.sleep(0.02)


def pods(*ips: str) -> frozenset[str]:
    return frozenset(f"http://{ip}:8000" for ip in ips)


def watcher(base: str, seen: Seen, services: Any = ("llama", "mistral")) -> EndpointSliceWatcher:
    return EndpointSliceWatcher(NS, seen, services, configuration=Configuration(host=base), watch_timeout=2,
                                backoff=(0.05, 0.2))


def test_slices_added_changed_and_removed_change_the_pod_sets() -> None:
    kube, seen = FakeKube(), Seen()
    kube.put(endpoint_slice("llama-a", "llama", [("10.0.0.1", True), ("10.0.0.2", False)]))
    kube.put(endpoint_slice("other-a", "sgp-infra-api", [("10.0.9.9", True)]))

    async def scenario(base: str) -> None:
        w = watcher(base, seen)
        await w.start()
        try:
            await until(lambda: seen.pods.get("llama") == pods("10.0.0.1"), "the listed slice, ready pod only")
            assert "sgp-infra-api" not in seen.pods  # not a model's Service
            kube.put(endpoint_slice("llama-b", "llama", [("10.0.0.3", None)]))  # no conditions: ready
            await until(lambda: seen.pods.get("llama") == pods("10.0.0.1", "10.0.0.3"), "a second slice")
            kube.put(endpoint_slice("llama-a", "llama", [("10.0.0.1", False), ("10.0.0.2", True)]))
            await until(lambda: seen.pods.get("llama") == pods("10.0.0.2", "10.0.0.3"), "readiness flipped")
            kube.put(endpoint_slice("mistral-a", "mistral", [("10.0.1.1", True)], port=9000, port_name="web"))
            await until(lambda: seen.pods.get("mistral") == frozenset({"http://10.0.1.1:9000"}),
                        "no port named http: the first port")
            kube.delete("llama-b")
            await until(lambda: seen.pods.get("llama") == pods("10.0.0.2"), "a slice removed")
            kube.delete("llama-a")
            await until(lambda: seen.pods.get("llama") == frozenset(), "the last slice removed")
            assert w.pods("llama") == frozenset() and w.pods("mistral") == {"http://10.0.1.1:9000"}
        finally:
            await w.stop()

    with running(kube.app()) as base:
        asyncio.run(scenario(base))
    assert set(kube.selectors) == {SLICE_SELECTOR}
    assert all(service in ("llama", "mistral") for service, _ in seen.calls)
    for service in ("llama", "mistral"):  # only changes are reported
        sets = [p for s, p in seen.calls if s == service]
        assert all(a != b for a, b in zip(sets, sets[1:], strict=False)), sets


def test_an_expired_or_dropped_watch_relists_and_catches_up() -> None:
    kube, seen = FakeKube(), Seen()
    kube.put(endpoint_slice("llama-a", "llama", [("10.0.0.1", True)]))
    kube.expire_next_watch = True

    async def scenario(base: str) -> None:
        w = watcher(base, seen)
        await w.start()
        try:
            await until(lambda: kube.lists >= 2, "a re-list after 410 Gone")
            kube.put(endpoint_slice("llama-a", "llama", [("10.0.0.1", True), ("10.0.0.4", True)]))
            await until(lambda: seen.pods.get("llama") == pods("10.0.0.1", "10.0.0.4"), "the change after 410")
            kube.drop_next_watch = True
            kube.put(endpoint_slice("llama-a", "llama", [("10.0.0.4", True)]))
            await until(lambda: kube.lists >= 3, "a re-list after the dropped watch")
            kube.put(endpoint_slice("llama-a", "llama", [("10.0.0.5", True)]))
            await until(lambda: seen.pods.get("llama") == pods("10.0.0.5"), "the change after the drop")
            assert w.errors >= 1  # the drop was an error (backoff); the 410 was not
        finally:
            await w.stop()

    with running(kube.app()) as base:
        asyncio.run(scenario(base))


def test_an_endpoint_change_moves_only_the_affected_keys() -> None:
    kube, routing = FakeKube(), Routing()
    kube.put(endpoint_slice("llama-a", "llama", [(f"10.0.0.{i}", True) for i in range(1, 5)]))
    replicas = routing.replicas("llama", "prefix-affinity")
    keys = [f"conversation {i}".encode() for i in range(200)]

    async def scenario(base: str) -> dict[bytes, Optional[str]]:
        w = watcher(base, routing.on_change)
        await w.start()
        try:
            await until(lambda: len(replicas.pods) == 4, "four pods")
            before = {k: replicas.pick(k).pod for k in keys}
            kube.put(endpoint_slice("llama-a", "llama", [(f"10.0.0.{i}", i != 3) for i in range(1, 5)]))
            await until(lambda: len(replicas.pods) == 3, "pod 3 not ready")
            return before
        finally:
            await w.stop()

    with running(kube.app()) as base:
        before = asyncio.run(scenario(base))
    gone = "http://10.0.0.3:8000"
    moved = [k for k in keys if replicas.pick(k).pod != before[k]]
    assert moved and all(before[k] == gone for k in moved)
    assert all(replicas.pick(k).pod == before[k] for k in keys if before[k] != gone)


def test_an_unreachable_api_server_is_retried_and_stops_cleanly() -> None:
    seen = Seen()

    async def scenario() -> int:
        w = watcher("http://127.0.0.1:9", seen)  # discard port: nothing listens
        await w.start()
        await until(lambda: w.errors >= 2, "two failed attempts")
        await w.stop()
        return w.errors

    assert asyncio.run(scenario()) >= 2 and seen.calls == []


def test_slice_pods_reads_ipv6_and_skips_a_slice_without_ports() -> None:
    obj = endpoint_slice("x", "llama", [("fd00::1", True)])
    obj["addressType"] = "IPv6"
    assert slice_pods(obj) == ("llama", frozenset({"http://[fd00::1]:8000"}))
    obj["ports"] = []
    assert slice_pods(obj) == ("llama", frozenset())
    assert slice_pods({"metadata": {"name": "y"}})[0] is None


# --- local backends ------------------------------------------------------------------------------


def test_backend_url_lists() -> None:
    assert parse_backend_urls("http://127.0.0.1:5005, http://127.0.0.1:5006/") == (
        "http://127.0.0.1:5005", "http://127.0.0.1:5006")
    assert parse_backend_urls("https://models.example/v1") == ("https://models.example/v1",)
    for bad, message in [("http://a:1,", "URL 2 .* is empty"), ("ftp://a:1", "not http"),
                         ("http://a:1,http://a:1/", "listed twice"), ("http://a:99999", "invalid port"),
                         ("http://a:1/?x=1", "query"), ("127.0.0.1:5005", "not http")]:
        with pytest.raises(ValueError, match=message):
            parse_backend_urls(bad)


def test_static_endpoints_report_each_model_once() -> None:
    seen = Seen()
    source = StaticEndpoints({"echo": parse_backend_urls("http://127.0.0.1:5005,http://127.0.0.1:5006")}, seen)
    asyncio.run(source.start())
    assert seen.calls == [("echo", frozenset({"http://127.0.0.1:5005", "http://127.0.0.1:5006"}))]
    assert source.pods("echo") == seen.pods["echo"] and source.pods("other") == frozenset()
    r = Replicas("least-load", source.pods("echo"))
    assert r.pick().pod in seen.pods["echo"]


def test_changing_the_watched_services_reports_added_and_dropped_ones() -> None:
    seen = Seen()
    w = EndpointSliceWatcher(NS, seen, ["llama"], configuration=Configuration(host="http://127.0.0.1:9"))
    w.index.put(endpoint_slice("llama-a", "llama", [("10.0.0.1", True)]))
    w.index.put(endpoint_slice("mistral-a", "mistral", [("10.0.1.1", True)]))
    w.set_services(["llama"])
    assert seen.calls == [("llama", pods("10.0.0.1"))]
    w.set_services(["mistral"])  # a catalogue update: llama gone, mistral new
    assert seen.calls[1:] == [("llama", frozenset()), ("mistral", pods("10.0.1.1"))]
    w.set_services(None)
    assert seen.calls[3:] == [("llama", pods("10.0.0.1"))]
