"""Shared pieces of the inference tests: a catalogue with a model per protocol
and operation, demo-model backends and fault servers on 127.0.0.1.

(Named ``test_inference_*`` to sit with the inference tests; it holds no tests.)
"""

from __future__ import annotations

import asyncio
import socket
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional


from api_helpers import running
from sgp_infra.api import create_app
from sgp_infra.api.inference import InferenceSettings
from sgp_infra.api.status import StaticStatus, StatusSource
from sgp_infra.catalog import Catalog, build_catalog
from sgp_infra.demo_model import DemoModel

KEY = "inference-key-0123456789"
ACCOUNT = "acme-ml"
API_KEYS = {KEY: frozenset({ACCOUNT})}
HEADERS = {"x-api-key": KEY}


def _template(protocol: str, model_type: str, predict: str, streaming: Optional[str] = None,
              request_params: Optional[list[dict[str, Any]]] = None, per_worker: int = 10,
              max_workers: int = 2, delay: int = 1) -> dict[str, Any]:
    bundle: dict[str, Any] = {"registry": "ghcr.io/acme", "image": "demo", "tag": "1", "command": ["serve"],
                              "healthcheck_route": "/readyz", "predict_route": predict,
                              "readiness_initial_delay_seconds": delay}
    if streaming:
        bundle["streaming_predict_route"] = streaming
    out: dict[str, Any] = {
        "endpoint_type": "STREAMING" if streaming else "SYNC", "model_type": model_type,
        "endpoint_protocol": protocol,
        "vendor_configuration": {"vendor": "LAUNCH", "bundle_config": bundle,
                                 "endpoint_config": {"cpus": 1, "memory": "1Gi", "min_workers": 0,
                                                     "max_workers": max_workers, "per_worker": per_worker}},
    }
    if request_params is not None:
        out["model_request_parameters_schema"] = {"parameters": request_params}
    return out


SGP_PARAMS = [{"name": "temperature", "type": "float", "description": "t", "required": False},
              {"name": "max_new_tokens", "type": "int", "description": "n", "required": False}]

#: model name → (template, model_type, protocol)
MODELS: dict[str, tuple[str, str, str]] = {
    "sgp-echo": ("sgp-completion", "COMPLETION", "SGP"),
    "sgp-chat": ("sgp-chat", "CHAT_COMPLETION", "SGP"),
    "sgp-embed": ("sgp-embed", "EMBEDDING", "SGP"),
    "sgp-rerank": ("sgp-rerank", "RERANKING", "SGP"),
    "vllm-chat": ("vllm-chat", "CHAT_COMPLETION", "VLLM"),
    "vllm-cmpl": ("vllm-cmpl", "COMPLETION", "VLLM"),
    "vllm-embed": ("vllm-embed", "EMBEDDING", "VLLM"),
    "cohere-gen": ("cohere-gen", "COMPLETION", "COHERE"),
    "cohere-embed": ("cohere-embed", "EMBEDDING", "COHERE"),
    "cohere-rerank": ("cohere-rerank", "RERANKING", "COHERE"),
    "tiny": ("tiny", "COMPLETION", "SGP"),  # per_worker 1 x max_workers 2: the 429 test
}


def make_catalog(extra_models: Optional[dict[str, Any]] = None,
                 inference: Optional[dict[str, dict[str, Any]]] = None) -> Catalog:
    """The test catalogue; ``inference`` sets models' ``inference`` extension by name (timeouts, hold)."""
    templates = {
        "sgp-completion": _template("SGP", "COMPLETION", "/predict", "/generate_streaming", SGP_PARAMS),
        "sgp-chat": _template("SGP", "CHAT_COMPLETION", "/predict", "/generate_streaming", SGP_PARAMS),
        "sgp-embed": _template("SGP", "EMBEDDING", "/predict"),
        "sgp-rerank": _template("SGP", "RERANKING", "/predict"),
        "vllm-chat": _template("VLLM", "CHAT_COMPLETION", "/v1/chat/completions", "/v1/chat/completions",
                               [{"name": "temperature", "type": "float", "description": "t", "required": False}]),
        "vllm-cmpl": _template("VLLM", "COMPLETION", "/v1/completions", "/v1/completions"),
        "vllm-embed": _template("VLLM", "EMBEDDING", "/v1/embeddings"),
        "cohere-gen": _template("COHERE", "COMPLETION", "/v1/generate", "/v1/generate"),
        "cohere-embed": _template("COHERE", "EMBEDDING", "/v1/embed"),
        "cohere-rerank": _template("COHERE", "RERANKING", "/v1/rerank"),
        "tiny": _template("SGP", "COMPLETION", "/predict", "/generate_streaming", per_worker=1, max_workers=2),
    }
    models: dict[str, Any] = {name: {"model_type": mtype, "model_template_id": tpl}
                              for name, (tpl, mtype, _p) in MODELS.items()}
    models["v5-generic"] = {
        "model_type": "generic", "model_vendor": "launch",
        "vendor_configuration": {
            "model_image": {"registry": "ghcr.io/acme", "repository": "demo", "tag": "1", "command": ["serve"],
                            "readiness_delay": 1,
                            "request_schema": {"type": "object", "properties": {"prompt": {"type": "string"}},
                                               "required": ["prompt"]}},
            "model_infra": {"cpus": 1, "memory": "1Gi", "min_workers": 0, "max_workers": 4, "per_worker": 64}}}
    models.update(extra_models or {})
    for name, options in (inference or {}).items():
        models[name] = {**models[name], "inference": options}
    raw = {"accountId": ACCOUNT, "namespace": "sgp-test", "gpuProfile": "eks", "templates": templates,
           "models": models, "modelGroups": {}}
    return build_catalog(raw)


def protocol_of(name: str) -> str:
    return MODELS[name][2] if name in MODELS else "SGP"


def serve(app: Any) -> Any:
    """Serve an ASGI app with uvicorn in a thread on an ephemeral loopback port."""
    return running(app)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def demo_backends(**kwargs: Any) -> Iterator[dict[str, str]]:
    """One demo model per protocol; yields ``{protocol: base URL}``."""
    with serve(DemoModel("SGP", name="sgp", **kwargs)) as sgp, \
            serve(DemoModel("VLLM", name="vllm", **kwargs)) as vllm, \
            serve(DemoModel("COHERE", name="cohere", **kwargs)) as cohere:
        yield {"SGP": sgp, "VLLM": vllm, "COHERE": cohere}


def backend_map(catalog: Catalog, urls: dict[str, str]) -> dict[str, str]:
    return {name: urls[protocol_of(name)] for name in catalog.models}


def make_app(catalog: Catalog, backends: dict[str, str], *, status: Optional[StatusSource] = None,
             settings: Optional[InferenceSettings] = None) -> Any:
    app = create_app(catalog, api_keys=API_KEYS, status_source=status or StaticStatus(), backends=backends)
    if settings is not None:  # replace the gateway's settings before the first request
        gateway = app.state.inference
        gateway.settings = gateway.upstream.settings = settings
        gateway.waker.poll_interval = settings.wake_poll_interval
        gateway.waker.fresh_for = settings.ready_fresh_for
    return app


class FaultServer:
    """A raw TCP server whose every connection is handled by ``behaviour``
    (an ``async (reader, writer)`` function): resets, garbage, hangs, floods."""

    def __init__(self, behaviour: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]):
        self.behaviour = behaviour
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.connections = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.behaviour(reader, writer)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def start() -> None:
            self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def __enter__(self) -> str:
        self._thread.start()
        self._ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: Any) -> None:
        async def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()  # else its selector and self-pipe sockets leak (a ResourceWarning)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one HTTP/1.1 request (headers + Content-Length body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head + body
