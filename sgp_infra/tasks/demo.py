"""The demo's ASYNC step: submit a task, poll it, print its answer (what a Launch client does)."""

from __future__ import annotations

import time

import httpx

from ..catalog import Model


def submit_and_poll(base_url: str, api_key: str, model: Model, timeout: float = 60.0) -> str:
    """POST one task to ``model`` through the API, poll until it is final; a line describing both."""
    headers = {"x-api-key": api_key}
    with httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=30.0) as client:
        created = client.post("/v1/async-tasks", params={"model_endpoint_id": model.name},
                              json={"args": {"prompt": "hello from sgp-infra"}})
        created.raise_for_status()
        task_id = created.json()["task_id"]
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            # The first look answers at once (usually PENDING); later ones wait for the answer.
            body = client.get(f"/v1/async-tasks/{task_id}", params={"wait": 1 if seen else 0}).json()
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
            if body["status"] in ("SUCCESS", "FAILURE") or time.monotonic() > deadline:
                break
    return (f"POST /v1/async-tasks -> task {task_id[:8]}…; polled {' -> '.join(seen)}: "
            f"{body['result'] if body['status'] == 'SUCCESS' else body['traceback']}")
