"""The v4/v5 inference routes on ASYNC models, through the official clients, on a real nats-server.

One API, one broker and two forwarder processes for the module: ``jobs`` (a
v5 generic ASYNC model) runs on the scriptable echo backend of
``async_helpers``; ``acompl`` (a v4 ASYNC COMPLETION template's model) on the
SGP demo model.  Each call is queued as a task, run by a forwarder and
answered as a synchronous call would be; a call that outlasts its timeout is
a 202 naming the task, which can then be polled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, NamedTuple

import httpx
import pytest
import scale_gp
import scale_gp_beta

from api_helpers import running
from async_helpers import (
    API_KEYS, DEV_KEY, OTHER_KEY, Backend, async_raw, forwarders, poll_until_final, wait_for, write_stack,
)
from sgp_infra.api import create_app
from sgp_infra.catalog import build_catalog
from sgp_infra.demo_model import DemoModel
from sgp_infra.tasks.local import LocalNats

pytestmark = pytest.mark.timeout(120)


def _raw() -> dict[str, Any]:
    raw = async_raw(namespace="async-inference", max_deliveries=2)
    raw["templates"] = {"acompl-tpl": {
        "endpoint_type": "ASYNC", "model_type": "COMPLETION", "endpoint_protocol": "SGP",
        "vendor_configuration": {
            "bundle_config": {"registry": "ghcr.io/sgp-infra", "image": "demo-model", "tag": "0.1.0",
                              "command": ["serve"], "healthcheck_route": "/readyz", "predict_route": "/predict"},
            "endpoint_config": {"cpus": 1, "memory": "1Gi", "min_workers": 0, "max_workers": 2, "per_worker": 4}},
        "async_tasks": {"task_timeout_seconds": 30}}}
    raw["models"]["acompl"] = {"model_type": "COMPLETION", "model_template_id": "acompl-tpl",
                               "model_creation_parameters": {}}
    return raw


class Env(NamedTuple):
    url: str
    http: httpx.Client


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    raw = _raw()
    stack = write_stack(Path(tmp_path_factory.mktemp("async-inference")), raw)
    server = LocalNats().start()
    echo = Backend().start()
    try:
        app = create_app(build_catalog(raw), api_keys=API_KEYS, nats_url=server.url)
        with running(DemoModel("SGP", name="acompl", greeting="")) as demo, running(app) as url, \
                httpx.Client(base_url=url, timeout=30) as http, \
                forwarders(stack, echo.url, server.url, model="jobs"), \
                forwarders(stack, demo, server.url, model="acompl"):
            wait_for(lambda: app.state.tasks.broker.ready, what="the API's broker connection")
            yield Env(url, http)
    finally:
        echo.stop()
        server.stop()


#: The official clients a test made; closed after it (their connection pools would leak sockets).
_clients: list[Any] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def v4(env: Env, key: str = DEV_KEY) -> scale_gp.SGPClient:
    client = scale_gp.SGPClient(api_key=key, base_url=env.url, max_retries=0, _strict_response_validation=True)
    _clients.append(client)
    return client


def v5(env: Env, key: str = DEV_KEY, account: str = "dev-account") -> scale_gp_beta.SGPClient:
    client = scale_gp_beta.SGPClient(api_key=key, base_url=env.url, account_id=account, max_retries=0,
                                     _strict_response_validation=True)
    _clients.append(client)
    return client


def test_v5_inference_on_an_async_model(env: Env) -> None:
    out = v5(env).inference.create(model="launch/jobs", args={"echo": "hi"})
    assert out.response == {"echo": "hi"} and out.object == "generic_inference"
    # The model's 4xx is passed through as the sync path does (the task failed at once).
    with pytest.raises(scale_gp_beta.BadRequestError) as bad:
        v5(env).inference.create(model="launch/jobs", args={"echo": "bad", "fail": 400})
    assert "failing on purpose" in str(bad.value)
    # A 5xx on every delivery: the task ends FAILURE after max_deliveries, a 502 like a failing sync model.
    with pytest.raises(scale_gp_beta.InternalServerError) as failed:
        v5(env).inference.create(model="launch/jobs", args={"echo": "boom", "fail": 500})
    assert failed.value.status_code == 502 and "task" in str(failed.value)


def test_v5_timeout_answers_202_with_the_task_to_poll(env: Env) -> None:
    raw = v5(env).inference.with_raw_response.create(model="launch/jobs", args={"echo": "slow", "sleep": 2.5},
                                                     inference_configuration={"timeout_seconds": 1})
    assert raw.status_code == 202
    out = raw.parse()  # the client parses it as an InferenceResponse: no answer yet, the task's id kept
    assert out.object == "generic_inference" and out.response is None
    task_id = out.task_id  # type: ignore[attr-defined]
    assert out.status in ("PENDING", "STARTED")  # type: ignore[attr-defined]
    assert poll_until_final(env.http, task_id) == {"task_id": task_id, "status": "SUCCESS",
                                                   "result": {"echo": "slow"}, "traceback": None, "status_code": 200}
    # Only keys that can see the model's account can see the task.
    hidden = env.http.get(f"/v1/async-tasks/{task_id}", headers={"x-api-key": OTHER_KEY})
    assert hidden.status_code == 404


def test_v4_completions_and_execute_on_an_async_model(env: Env) -> None:
    client = v4(env)
    out = client.models.completions.create("acompl", prompt="hello")
    assert out.completions == [["hello", ["hello"]]]
    model = client.models.retrieve("acompl")
    deployment = client.models.deployments.list(model.id).items[0]
    executed = client.models.deployments.execute(deployment.id, model_instance_id=model.id,
                                                 extra_body={"prompt": "e"})
    assert executed["completions"] == [["e", ["e"]]]  # type: ignore[index]


def test_streaming_an_async_model_is_a_400(env: Env) -> None:
    with pytest.raises(scale_gp.BadRequestError) as v4_error:
        list(v4(env).models.completions.create("acompl", prompt="x", stream=True))
    assert "ASYNC" in str(v4_error.value) and "not streamed" in str(v4_error.value)
    with pytest.raises(scale_gp_beta.BadRequestError) as v5_error:
        v5(env).inference.create(model="launch/jobs", args={"echo": "x", "stream": True})
    assert "not streamed" in str(v5_error.value)


def test_other_accounts_get_404_through_the_inference_routes(env: Env) -> None:
    with pytest.raises(scale_gp_beta.NotFoundError):
        v5(env, key=OTHER_KEY, account="other-account").inference.create(model="launch/jobs", args={"echo": "x"})
    with pytest.raises(scale_gp.NotFoundError):
        v4(env, key=OTHER_KEY).models.completions.create("acompl", prompt="x")
    raw = env.http.post("/v5/inference", json={"model": "launch/jobs", "args": {}},
                        headers={"x-api-key": OTHER_KEY})
    assert raw.status_code == 404 and raw.json()["error"] == "not_found"
