"""``python -m sgp_infra serve`` as a user runs it: the dev stack, the dev key, the official client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import scale_gp_beta

from api_helpers import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_dev_stack_with_the_dev_key() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SGP_INFRA_API_KEYS"}
    proc = subprocess.Popen([sys.executable, "-m", "sgp_infra", "serve", "--stack", "dev", "--port", str(port),
                             "--status", "none"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        client = scale_gp_beta.SGPClient(api_key="sgp-infra-dev-key", account_id="dev-account",
                                         base_url=f"http://127.0.0.1:{port}", max_retries=0)
        assert sorted(m.name for m in client.models.list()) == ["echo", "t4-embedder"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "dev API key 'sgp-infra-dev-key'" in err
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
