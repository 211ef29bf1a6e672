"""``demo``: the README's main job, on a laptop with no cluster and no GPU.

It runs the whole data flow once, for real: validate the stack's catalogue,
render its manifests, start ``demo-model`` echo servers (one per
``endpoint_protocol``, each answering its models' routes), start the
catalogue API in front of them with ``serve --backend``, then read the
catalogue and call every model once through the API with the official SGP
clients, the way its type is called.  Everything listens on
127.0.0.1 and is stopped at the end, unless ``--keep-serving``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from ..catalog import Catalog, Model
from . import render as render_cmd
from .common import EXIT_USAGE, add_source_args, port_number, try_load
from .serve import listen_error, listening_socket

HELP = "run the main job: validate, render, serve the catalogue with echo models, call it with the SGP clients"

DESCRIPTION = """\
Runs the whole data flow on this machine, with no cluster, GPU or Pulumi CLI:

  1. validate the stack's catalogue (same checks as `pulumi up`)
  2. render its Kubernetes manifests to --out (default rendered/<stack>)
  3. start demo echo models on 127.0.0.1 (one per endpoint_protocol and
     greeting) in place of the models' images
  4. start the catalogue API (`serve`) in front of them
  5. list models and call every model once with the official scale-gp (v4)
     and scale-gp-beta (v5) clients, the way its type is called (completions,
     chat, embeddings, rerankings, execute / inference; streamed when the
     model's endpoint_type is STREAMING), printing one answer per model

Everything stops at the end; --keep-serving leaves the API up until Ctrl-C so
you can call it yourself (the dev API key is sgp-infra-dev-key).
"""



def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(parser)
    parser.add_argument("--out", metavar="DIR", help="where to render manifests (default rendered/<stack>)")
    parser.add_argument("--port", type=port_number, default=0, help="API port (default: a free one)")
    parser.add_argument("--keep-serving", action="store_true", help="leave the API running until Ctrl-C")
    parser.set_defaults(run=run)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> bool:
    """Poll ``url`` until it answers 200, the process dies, or time runs out."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def start(args: list[str], env: Optional[dict[str, str]] = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sgp_infra", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        import scale_gp
        import scale_gp_beta

        from ..api.auth import DEV_API_KEY
    except ImportError as exc:
        print(f"error: the demo calls the API with the official clients ({exc.name} is missing): "
              "pip install -e '.[dev]'", file=sys.stderr)
        return EXIT_USAGE

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    step("validate")
    catalog, code = try_load(args)
    if catalog is None:
        return code
    print(catalog.summary())

    step("render")
    stack = args.stack or Path(args.config_file or "stack").stem.removeprefix("Pulumi.")
    out = args.out or f"rendered/{stack}"
    render_args = argparse.Namespace(stack=args.stack, config_file=args.config_file, out=out)
    if render_cmd.run(render_args) != 0:
        return 1

    if args.port:
        # Something else on --port could answer /readyz and be taken for the API, so check before starting.
        try:
            listening_socket("127.0.0.1", args.port).close()
        except OSError as exc:
            print(listen_error("127.0.0.1", args.port, exc), file=sys.stderr)
            return EXIT_USAGE
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backends = start_models(catalog, procs)
        if backends is None:
            return 1
        port = args.port or free_port()
        step(f"serve the catalogue API on http://127.0.0.1:{port}")
        source = ["--stack", args.stack] if args.stack else ["--config-file", args.config_file]
        api = start(["serve", *source, "--port", str(port), "--status", "probe",
                     *(a for name, url in backends.items() for a in ("--backend", f"{name}={url}"))],
                    env=None)
        procs.append(api)
        base = f"http://127.0.0.1:{port}"
        if not wait_ready(f"{base}/readyz", api):
            print(f"error: the API did not start:\n{_stderr(api)}", file=sys.stderr)
            return 1
        print(f"API ready; dev key {DEV_API_KEY}")

        step("call it with the official clients")
        v4 = scale_gp.SGPClient(api_key=DEV_API_KEY, base_url=base, max_retries=0)
        v5 = scale_gp_beta.SGPClient(api_key=DEV_API_KEY, account_id=catalog.settings.account_id, base_url=base,
                                     max_retries=0)
        failed = exercise(catalog, v4, v5, (scale_gp.APIError, scale_gp_beta.APIError))
        if failed:
            print(f"error: {failed} of {len(catalog.models)} model(s) did not answer", file=sys.stderr)
        if args.keep_serving:
            print(f"\nserving on {base} (key {DEV_API_KEY}); Ctrl-C stops", flush=True)
            api.wait()
        return 1 if failed else 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                # Longer than serve's own grace for its forwarders, so serve always gets to stop its
                # nats-server: killed earlier, serve would leave it running.
                proc.wait(timeout=SHUTDOWN_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()


#: How long demo waits for serve (and the model servers) to stop after SIGTERM before killing them.
SHUTDOWN_SECONDS = 30.0

#: What every demo call sends.
PROMPT = "hello from sgp-infra"


@dataclass(frozen=True)
class BackendGroup:
    """Models one ``demo-model`` process stands in for: same protocol, same greeting.

    One process per protocol (and ``DEMO_GREETING``, the only model env the
    echo reads) keeps the demo's start-up bounded on a large catalogue; an SGP
    process also answers each member's own predict and streaming routes.
    """

    protocol: str
    greeting: Optional[str]
    models: tuple[Model, ...]

    def args(self, port: int) -> list[str]:
        out = ["demo-model", "--port", str(port), "--protocol", self.protocol,
               "--name", self.models[0].name if len(self.models) == 1 else f"demo-{self.protocol.lower()}"]
        if self.protocol == "SGP":
            for route in sorted({m.predict_route for m in self.models} - {"/predict"}):
                out += ["--predict-route", route]
            for route in sorted({m.streaming_predict_route for m in self.models} - {"/generate_streaming"}):
                out += ["--streaming-route", route]
        return out


def backend_groups(catalog: Catalog) -> list[BackendGroup]:
    """The catalogue's models grouped by the demo server that can answer them."""
    groups: dict[tuple[str, Optional[str]], list[Model]] = {}
    for model in catalog.models.values():
        key = (model.endpoint_protocol.upper(), model.env.get("DEMO_GREETING"))
        groups.setdefault(key, []).append(model)
    return [BackendGroup(protocol, greeting, tuple(models)) for (protocol, greeting), models in groups.items()]


def start_models(catalog: Catalog, procs: list[subprocess.Popen[bytes]]) -> Optional[dict[str, str]]:
    """One echo server per protocol (and greeting), speaking it; ``{model name: URL}``."""
    groups = backend_groups(catalog)
    step(f"start {len(groups)} demo model server(s) for {len(catalog.models)} model(s)")
    backends: dict[str, str] = {}
    for group in groups:
        port = free_port()
        env = {"DEMO_GREETING": group.greeting} if group.greeting is not None else {}
        proc = start(group.args(port), env=env)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        names = ", ".join(m.name for m in group.models)
        if not wait_ready(f"{url}/readyz", proc):
            print(f"error: the {group.protocol} demo model for {names} did not start:\n{_stderr(proc)}",
                  file=sys.stderr)
            return None
        print(f"{group.protocol} echo server on {url} for {names}")
        for model in group.models:
            backends[model.name] = url
    return backends


def exercise(catalog: Catalog, v4: Any, v5: Any, errors: tuple[type[BaseException], ...]) -> int:
    """List the catalogue and send one inference per model through the API.

    Prints one ``<model>: <call> -> <answer>`` line per model; a call the API
    refuses is printed to stderr with its reason and counted, never a
    traceback.  Returns the number of failed calls.
    """
    try:
        models = v4.models.list(limit=100)
        print(f"v4 GET /v4/models: {[m.name for m in models.items]}")
        listed = v5.models.list(limit=100)
        print(f"v5 GET /v5/models: {[(m.name, m.status) for m in listed.items]}")
    except errors as exc:
        print(f"error: listing the models failed: {exc}", file=sys.stderr)
        return len(catalog.models)
    failed = 0
    for model in catalog.models.values():
        try:
            what, answer = call(model, v4, v5)
        except errors as exc:
            print(f"error: {model.name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{model.name}: {what} -> {answer}")
    return failed


def call(model: Model, v4: Any, v5: Any) -> tuple[str, Any]:
    """One inference for ``model``, made the way its API version and type are called.

    The one place that decides how a model is called: ``(what was called,
    the answer)``.  A model whose endpoint streams is called streaming and its
    chunks are joined; generic models (v4 ``execute``, v5 ``inference``) get a
    body in their own protocol and are called without streaming, because the
    official clients read those answers as one JSON document.
    """
    if model.is_async:  # queued: submit a task, poll it (serve runs a local nats-server and a forwarder)
        from ..api.auth import DEV_API_KEY
        from ..tasks.demo import submit_and_poll

        return "async task", submit_and_poll(str(v4.base_url), DEV_API_KEY, model)
    kind = model.model_type.upper()
    stream = model.streaming
    suffix = " (stream)" if stream else ""
    if model.api_version == "v4":
        if kind == "COMPLETION":
            if stream:
                chunks = v4.models.completions.create(model.name, prompt=PROMPT, stream=True)
                return f"v4 completions{suffix}", _joined_v4(chunks)
            return "v4 completions", v4.models.completions.create(model.name, prompt=PROMPT).completions
        if kind == "CHAT_COMPLETION":
            if stream:
                chunks = v4.models.chat_completions.create(model.name, prompt=PROMPT, chat_history=[], stream=True)
                return f"v4 chat-completions{suffix}", _joined_v4(chunks)
            out = v4.models.chat_completions.create(model.name, prompt=PROMPT, chat_history=[])
            return "v4 chat-completions", out.completions
        if kind == "EMBEDDING":
            out = v4.models.embeddings.create(model.name, texts=[PROMPT])
            return "v4 embeddings", f"{len(out.embeddings)} vector(s) of {len(out.embeddings[0])}"
        if kind == "RERANKING":
            out = v4.models.rerankings.create(model.name, query=PROMPT, chunks=[PROMPT, "something else"])
            return "v4 rerankings", out.chunk_scores
        deployment = v4.models.deployments.list(model.id).items[0]
        out = v4.models.deployments.execute(deployment.id, model_instance_id=model.id,
                                            extra_body=execute_body(model))
        return "v4 execute", out
    target = f"launch/{model.name}"
    if kind == "COMPLETION":
        if stream:
            chunks = v5.completions.create(model=target, prompt=PROMPT, stream=True)
            return f"v5 completions{suffix}", "".join(c.choices[0].text for c in chunks if c.choices)
        return "v5 completions", v5.completions.create(model=target, prompt=PROMPT).choices[0].text
    if kind == "CHAT_COMPLETION":
        messages = [{"role": "user", "content": PROMPT}]
        if stream:
            chunks = v5.chat.completions.create(model=target, messages=messages, stream=True)
            return (f"v5 chat/completions{suffix}",
                    "".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
        out = v5.chat.completions.create(model=target, messages=messages)
        return "v5 chat/completions", out.choices[0].message.content
    args = example_value(dict(model.spec.vendor_configuration.model_image.request_schema))  # type: ignore[union-attr]
    return "v5 inference", v5.inference.create(model=target, args=args).response


def _joined_v4(chunks: Iterable[Any]) -> str:
    """The text of a v4 stream: each chunk's new output, in order."""
    return "".join(c.completions[0][1][0] for c in chunks if c.completions and c.completions[0][1])


def execute_body(model: Model) -> dict[str, Any]:
    """A body in the model's own protocol for v4 ``execute`` (sent unchanged to its predict route)."""
    if model.endpoint_protocol.upper() == "SGP":
        return {"prompt": PROMPT}
    route = model.predict_route.rstrip("/")
    for suffix, body in (("/chat/completions", {"messages": [{"role": "user", "content": PROMPT}]}),
                         ("/embeddings", {"input": [PROMPT]}),
                         ("/embed", {"texts": [PROMPT]}),
                         ("/rerank", {"query": PROMPT, "documents": [PROMPT]})):
        if route.endswith(suffix):
            return body
    return {"prompt": PROMPT}


def example_value(schema: dict[str, Any]) -> Any:
    """A small value valid for a v5 model's ``request_schema`` (JSON Schema), for ``inference``.

    No schema (or an object schema without properties) gets ``{"prompt": ...}``;
    strings get the demo prompt, arrays one item, numbers 1; an object gets its
    required properties, or all of them when none is required.
    """
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    props = schema.get("properties")
    if kind in (None, "object") and not props:
        return {"prompt": PROMPT}
    if kind in (None, "object"):
        props = props or {}
        names = schema.get("required") or list(props)
        return {name: example_value(props.get(name, {"type": "string"})) for name in names}
    if kind == "array":
        items = schema.get("items")
        return [example_value(items if isinstance(items, dict) else {"type": "string"})]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return PROMPT


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        _out, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        return "(no output)"
    return (err or b"").decode(errors="replace")[-2000:]
