"""``python -m sgp_infra serve`` as a user runs it: the dev stack, the dev key, the official client."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import scale_gp_beta

from api_helpers import ROOT, free_port, wait_ready
from sgp_infra.catalog import load_file
from sgp_infra.cli.serve import unknown_backend_error, unrouted_models_note


def test_serve_dev_stack_with_the_dev_key() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SGP_INFRA_API_KEYS"}
    proc = subprocess.Popen([sys.executable, "-m", "sgp_infra", "serve", "--stack", "dev", "--port", str(port),
                             "--status", "none"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(proc, port)
        client = scale_gp_beta.SGPClient(api_key="sgp-infra-dev-key", account_id="dev-account",
                                         base_url=f"http://127.0.0.1:{port}", max_retries=0)
        assert sorted(m.name for m in client.models.list()) == ["echo", "t4-embedder", "transcriber"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "dev API key 'sgp-infra-dev-key'" in err
    assert f"\nserving on http://127.0.0.1:{port}: catalogue valid (account dev-account" in err  # the URL first
    assert err.count("sgp-infra-dev-key") == 1  # the startup note; never in request logs
    assert '"route":"/v5/models"' in err  # the JSON access log line


def test_serve_refuses_a_public_address_without_keys() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SGP_INFRA_API_KEYS"}
    done = subprocess.run([sys.executable, "-m", "sgp_infra", "serve", "--stack", "dev", "--host", "0.0.0.0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "SGP_INFRA_API_KEYS is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_rejects_malformed_keys_without_echoing_them() -> None:
    env = {**os.environ, "SGP_INFRA_API_KEYS": '{"secret-value-xyz": 5}'}
    done = subprocess.run([sys.executable, "-m", "sgp_infra", "serve", "--stack", "dev"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "key number 1" in done.stderr
    assert "secret-value-xyz" not in done.stderr


def _start(port: int, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "SGP_INFRA_API_KEYS"}
    return subprocess.Popen([sys.executable, "-m", "sgp_infra", "serve", "--stack", "dev", "--port", str(port),
                             "--status", "none", "--no-access-log", *extra], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_reuse_port_lets_two_serve_processes_share_a_port_and_either_one_answers() -> None:
    port = free_port()
    first = _start(port, "--reuse-port")
    second = None
    try:
        wait_ready(first, port)
        # Without --reuse-port a second process cannot bind the port ...
        refused = _start(port)
        try:
            assert refused.wait(timeout=30) != 0
        finally:
            refused.kill()
        _, refused_err = refused.communicate(timeout=10)
        assert "cannot listen" in refused_err and "pick another --port" in refused_err
        assert "nats-server" not in refused_err  # the port is checked before anything starts
        # ... with it, it can; once the first is gone the second answers on the same port.
        second = _start(port, "--reuse-port")
        time.sleep(0.5)
        deadline = time.monotonic() + 30
        while second.poll() is None and time.monotonic() < deadline:
            first.terminate()
            first.communicate(timeout=10)
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert first.poll() is not None and second.poll() is None, "the second --reuse-port process exited"
        r = httpx.get(f"http://127.0.0.1:{port}/v4/models", headers={"x-api-key": "sgp-infra-dev-key"}, timeout=5)
        assert r.status_code == 200 and r.json()["total_item_count"] >= 1  # answered by the second process
    finally:
        for proc in (first, second):
            if proc is not None:
                if proc.poll() is None:
                    proc.terminate()
                proc.communicate(timeout=10)  # waits, and closes the stderr pipe


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode() for k, v in pairs}


def test_two_workers_answer_requests_and_metrics_and_the_metrics_dir_is_removed() -> None:
    port = free_port()
    proc = _start(port, "--workers", "2")
    try:
        wait_ready(proc, port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"x-api-key": "sgp-infra-dev-key"}) as client:
            for _ in range(20):
                r = client.get("/v4/models", headers={"connection": "close"})
                assert r.status_code == 200 and r.json()["total_item_count"] >= 1
            metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "sgp_infra_api_requests_total" in metrics.text
        # Two worker processes share the port, each with a fresh prometheus_client multiprocess directory.
        workers = [pid for pid in _children(proc.pid) if b"spawn_main" in _cmdline(pid)]  # not the resource tracker
        assert len(workers) == 2
        [metrics_dir] = {_environ(pid)["PROMETHEUS_MULTIPROC_DIR"] for pid in workers}
        assert os.path.isdir(metrics_dir)
        assert "SGP_INFRA_API_KEYS" not in _environ(workers[0])  # the dev key is rebuilt, never passed on
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert not os.path.exists(metrics_dir)


def test_metrics_sum_the_workers() -> None:
    port = free_port()
    proc = _start(port, "--workers", "2")
    try:
        wait_ready(proc, port)

        def one(_: int) -> int:
            return httpx.get(f"http://127.0.0.1:{port}/v4/models", headers={"x-api-key": "sgp-infra-dev-key"},
                             timeout=10).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(one, range(40))) == [200] * 40
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("sgp_infra_api_requests_total{") and 'route="/v4/models"' in line)
    assert counted == 40



def test_serve_outside_a_cluster_names_the_models_without_a_backend() -> None:
    """Their calls would wait out a cold start and end in a 503; the note says so and how to fix it."""
    catalog = load_file(ROOT / "stacks" / "Pulumi.dev.yaml")
    note = unrouted_models_note(catalog, {"echo": "http://127.0.0.1:5005"}, {})
    assert note is not None and note.startswith("note: no --backend for t4-embedder, transcriber:")
    assert "--backend t4-embedder=http://127.0.0.1:5005" in note and "demo --keep-serving" in note
    every = {name: "http://127.0.0.1:5005" for name in catalog.models}
    assert unrouted_models_note(catalog, every, {}) is None
    assert unrouted_models_note(catalog, {}, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None  # in a pod


def test_serve_backend_for_an_unknown_model_exits_2_naming_the_catalogue_models() -> None:
    """A misspelt ``--backend`` name would leave the model on its in-cluster URL (which hangs outside a cluster)."""
    env = {k: v for k, v in os.environ.items() if k != "SGP_INFRA_API_KEYS"}
    done = subprocess.run([sys.executable, "-m", "sgp_infra", "serve", "--stack", "dev", "--port", "0",
                           "--backend", "echo=http://127.0.0.1:9", "--backend", "ecoh=http://127.0.0.1:9"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "'ecoh' (did you mean 'echo'?)" in done.stderr
    assert "its models: echo, t4-embedder" in done.stderr
    assert "serving" not in done.stderr and "Traceback" not in done.stderr


def test_unknown_backend_error_accepts_model_and_object_names() -> None:
    catalog = load_file(ROOT / "stacks" / "Pulumi.prod.yaml")
    assert catalog.models["llama-3.2-1b"].object_name == "llama-3-2-1b"
    assert unknown_backend_error(catalog, {"llama-3.2-1b": "http://a", "llama-3-2-1b": "http://b"}) is None
    assert unknown_backend_error(catalog, {}) is None
    error = unknown_backend_error(catalog, {"nope": "http://a"})
    assert error is not None and error.startswith("--backend names no model of the catalogue: 'nope'; its models: ")
    assert error.endswith(", ".join(sorted(catalog.models)))


def test_demo_model_on_a_taken_port_says_so_and_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "sgp_infra", "demo-model", "--port", str(port)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "pick another --port (0 picks a free one)" in done.stderr
    assert "speaking" not in done.stderr  # it never claims to listen where it does not


def test_forwarder_on_a_taken_port_says_so_and_otherwise_says_where_it_looks() -> None:
    command = [sys.executable, "-m", "sgp_infra", "forwarder", "--stack", "dev", "--model", "transcriber",
               "--backend", "http://127.0.0.1:9", "--nats", "nats://127.0.0.1:9"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*command, "--port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "forwarder for" not in done.stderr
    # Free to listen: one line names the broker, the model and the probe before it connects (quietly, forever).
    proc = subprocess.Popen([*command, "--port", "0"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert re.fullmatch(r"forwarder for 'transcriber': tasks from nats://127\.0\.0\.1:9 \(credentials: none\), "
                        r"model at "
                        r"http://127\.0\.0\.1:9; probes on http://127\.0\.0\.1:\d+/readyz \(503 until NATS and "
                        r"the model answer\)\n", line), line
