"""NATS credentials (``SGP_INFRA_NATS_*``) against a real nats-server on 127.0.0.1 that requires them.

Right credentials: the API and a forwarder process run a task end to end.
Wrong or missing ones: no silent retrying; the broker records and logs (once)
why the server refused it, the API answers 503 saying so, the forwarder's
``/readyz`` names it; the values themselves appear in no message.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from api_helpers import running
from async_helpers import API_KEYS, DEV_KEY, Backend, async_raw, forwarders, poll_until_final, wait_for, write_stack
from sgp_infra.api import create_app
from sgp_infra.catalog import build_catalog
from sgp_infra.plan.nats import task_layout
from sgp_infra.tasks.auth import NatsAuthInvalid, nats_auth
from sgp_infra.tasks.broker import BrokerUnavailable, TaskBroker
from sgp_infra.tasks.local import LocalNats, forwarder_command

pytestmark = pytest.mark.timeout(120)

TOKEN = "nats-token-never-logged-31337"
USER, PASSWORD = "sgp", "nats-password-never-logged-2718"
NATS_VARS = ("SGP_INFRA_NATS_TOKEN", "SGP_INFRA_NATS_USER", "SGP_INFRA_NATS_PASSWORD")


@pytest.fixture(scope="module")
def token_nats() -> Iterator[LocalNats]:
    server = LocalNats(extra_args=("--auth", TOKEN)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def user_nats() -> Iterator[LocalNats]:
    server = LocalNats(extra_args=("--user", USER, "--pass", PASSWORD)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def no_nats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in NATS_VARS:
        monkeypatch.delenv(var, raising=False)


def layout(namespace: str) -> Any:
    return task_layout(build_catalog(async_raw(namespace=namespace)))


# -- the variables ---------------------------------------------------------------------------------


def test_the_variables_make_a_token_or_a_user_and_password() -> None:
    assert nats_auth({}) == {}
    assert nats_auth({"SGP_INFRA_NATS_TOKEN": TOKEN}) == {"token": TOKEN}
    assert nats_auth({"SGP_INFRA_NATS_USER": USER, "SGP_INFRA_NATS_PASSWORD": PASSWORD}) == \
        {"user": USER, "password": PASSWORD}
    assert nats_auth({"SGP_INFRA_NATS_TOKEN": "", "SGP_INFRA_NATS_USER": ""}) == {}
    for bad in ({"SGP_INFRA_NATS_TOKEN": TOKEN, "SGP_INFRA_NATS_USER": USER}, {"SGP_INFRA_NATS_USER": USER},
                {"SGP_INFRA_NATS_PASSWORD": PASSWORD}):
        with pytest.raises(NatsAuthInvalid) as caught:
            nats_auth(bad)
        assert TOKEN not in str(caught.value) and PASSWORD not in str(caught.value)
        assert "SGP_INFRA_NATS_" in str(caught.value)


def test_the_forwarder_refuses_an_incomplete_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = write_stack(tmp_path, async_raw())
    monkeypatch.setenv("SGP_INFRA_NATS_USER", USER)
    cmd = forwarder_command(["--config-file", str(stack)], "jobs", "http://127.0.0.1:9", "nats://127.0.0.1:9")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "SGP_INFRA_NATS_PASSWORD is not set" in done.stderr and "Traceback" not in done.stderr


def test_serve_refuses_an_incomplete_set_before_starting_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from sgp_infra.cli import main

    stack = write_stack(tmp_path, async_raw())
    monkeypatch.setenv("SGP_INFRA_NATS_TOKEN", TOKEN)
    monkeypatch.setenv("SGP_INFRA_NATS_PASSWORD", PASSWORD)
    assert main(["serve", "--config-file", str(stack), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "error: set either SGP_INFRA_NATS_TOKEN, or SGP_INFRA_NATS_USER and SGP_INFRA_NATS_PASSWORD" in err
    assert TOKEN not in err and PASSWORD not in err


# -- the broker ------------------------------------------------------------------------------------


def test_the_broker_logs_in_with_a_token_or_a_user_and_password(
        token_nats: LocalNats, user_nats: LocalNats, monkeypatch: pytest.MonkeyPatch) -> None:
    async def ready(url: str, auth: Any, namespace: str) -> bool:
        broker = TaskBroker(url, layout(namespace), auth=auth)
        await broker.start()
        try:
            return await broker.wait_ready(15) and broker.auth_error is None
        finally:
            await broker.close()

    assert asyncio.run(ready(token_nats.url, {"token": TOKEN}, "tok"))
    assert asyncio.run(ready(user_nats.url, {"user": USER, "password": PASSWORD}, "usr"))
    # By default from the environment.
    monkeypatch.setenv("SGP_INFRA_NATS_TOKEN", TOKEN)
    assert asyncio.run(ready(token_nats.url, None, "tok-env"))


@pytest.mark.parametrize("auth, expected", [
    ({"token": "wrong-token"}, "refused the credentials in SGP_INFRA_NATS_TOKEN"),
    ({"user": USER, "password": "wrong-password"}, "refused the credentials in SGP_INFRA_NATS_USER/"
                                                   "SGP_INFRA_NATS_PASSWORD"),
    ({}, "requires credentials and none are set"),
])
def test_refused_credentials_are_a_clear_error_logged_once(
        user_nats: LocalNats, caplog: pytest.LogCaptureFixture, auth: Any, expected: str) -> None:
    async def attempt() -> tuple[bool, str, str]:
        broker = TaskBroker(user_nats.url, layout("refused"), auth=auth)
        await broker.start()
        try:
            # Refused at least twice (it keeps retrying, as for an outage: the server's config may be fixed).
            await asyncio.sleep(1.5)
            ready = broker.ready
            try:
                await broker.find("00000000-0000-4000-8000-000000000000")
                unavailable = ""
            except BrokerUnavailable as exc:
                unavailable = str(exc)
            return ready, broker.auth_error or "", unavailable
        finally:
            await broker.close()

    with caplog.at_level(logging.DEBUG, logger="sgp_infra.tasks"):
        ready, error, unavailable = asyncio.run(attempt())
    assert not ready
    assert f"NATS at {user_nats.url} {expected}" in error and "Authorization Violation" in error
    assert "refused this service's NATS credentials" in unavailable
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and expected in errors[0]
    for secret in (PASSWORD, "wrong-password", "wrong-token"):
        assert secret not in caplog.text and secret not in error


# -- the API and the forwarder ----------------------------------------------------------------------


def test_api_and_forwarder_run_a_task_with_user_and_password(
        tmp_path: Path, user_nats: LocalNats, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGP_INFRA_NATS_USER", USER)
    monkeypatch.setenv("SGP_INFRA_NATS_PASSWORD", PASSWORD)  # the forwarder process inherits them
    raw = async_raw(namespace="auth-ok")
    stack = write_stack(tmp_path, raw)
    app = create_app(build_catalog(raw), api_keys=API_KEYS, nats_url=user_nats.url)
    backend = Backend().start()
    try:
        with running(app) as url, httpx.Client(base_url=url, timeout=30) as client, \
                forwarders(stack, backend.url, user_nats.url):
            wait_for(lambda: app.state.tasks.broker.ready, what="the API's broker connection")
            created = client.post("/v1/async-tasks", params={"model_endpoint_id": "jobs"},
                                  json={"args": {"echo": "with-auth"}}, headers={"x-api-key": DEV_KEY})
            assert created.status_code == 200, created.text
            body = poll_until_final(client, created.json()["task_id"])
            assert body["status"] == "SUCCESS" and body["result"] == {"echo": "with-auth"}
    finally:
        backend.stop()


def test_wrong_credentials_give_the_api_a_503_and_the_forwarder_a_clear_error(
        tmp_path: Path, token_nats: LocalNats, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGP_INFRA_NATS_TOKEN", "wrong-token-value")
    raw = async_raw(namespace="auth-bad")
    stack = write_stack(tmp_path, raw)
    app = create_app(build_catalog(raw), api_keys=API_KEYS, nats_url=token_nats.url)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_for(lambda: app.state.tasks.broker.auth_error is not None, what="the refusal")
        created = client.post("/v1/async-tasks", params={"model_endpoint_id": "jobs"},
                              json={"args": {"echo": "x"}}, headers={"x-api-key": DEV_KEY})
        assert created.status_code == 503
        assert "refused this service's NATS credentials" in created.text and "wrong-token-value" not in created.text

    cmd = forwarder_command(["--config-file", str(stack)], "jobs", "http://127.0.0.1:9", token_nats.url)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not any("refused the credentials" in line for line in lines):
            line = proc.stderr.readline()
            assert line, f"forwarder exited ({proc.poll()}) without the error: {''.join(lines)}"
            lines.append(line)
        text = "".join(lines)
        assert f"NATS at {token_nats.url} refused the credentials in SGP_INFRA_NATS_TOKEN" in text
        assert "(credentials: SGP_INFRA_NATS_TOKEN)" in text and "wrong-token-value" not in text
        # Its readiness probe says why it is not ready.
        [probe] = re.findall(r"http://127\.0\.0\.1:\d+/readyz", text)
        ready = httpx.get(probe, timeout=5)
        assert ready.status_code == 503 and "refused the credentials" in ready.json()["error"]
        assert proc.poll() is None  # still retrying: a fixed server config is picked up without a restart
    finally:
        proc.kill()
        proc.communicate(timeout=10)
