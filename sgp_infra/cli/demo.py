"""``demo``: the README's main job, on a laptop with no cluster and no GPU.

It runs the whole data flow once, for real: validate the stack's catalogue,
render its manifests, start one ``demo-model`` echo server per model (each
speaking the model's ``endpoint_protocol``), start the catalogue API in front
of them with ``serve --backend``, then read the catalogue and run inference
through the API with the official SGP clients.  Everything listens on
127.0.0.1 and is stopped at the end, unless ``--keep-serving``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from ..catalog import Catalog, Model
from . import render as render_cmd
from .common import EXIT_USAGE, add_source_args, try_load

HELP = "run the main job: validate, render, serve the catalogue with echo models, call it with the SGP clients"

DESCRIPTION = """\
Runs the whole data flow on this machine, with no cluster, GPU or Pulumi CLI:

  1. validate the stack's catalogue (same checks as `pulumi up`)
  2. render its Kubernetes manifests to --out (default rendered/<stack>)
  3. start a demo echo model per catalogue model on 127.0.0.1
  4. start the catalogue API (`serve`) in front of them
  5. list models and run inference with the official scale-gp (v4) and
     scale-gp-beta (v5) clients, printing what comes back

Everything stops at the end; --keep-serving leaves the API up until Ctrl-C so
you can call it yourself (the dev API key is sgp-infra-dev-key).
"""



def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(parser)
    parser.add_argument("--out", metavar="DIR", help="where to render manifests (default rendered/<stack>)")
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
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
        exercise(catalog, v4, v5)
        if args.keep_serving:
            print(f"\nserving on {base} (key {DEV_API_KEY}); Ctrl-C stops", flush=True)
            api.wait()
        return 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_models(catalog: Catalog, procs: list[subprocess.Popen[bytes]]) -> Optional[dict[str, str]]:
    """One echo server per model, speaking its protocol; ``{model name: URL}``."""
    step(f"start {len(catalog.models)} demo model server(s)")
    backends: dict[str, str] = {}
    for model in catalog.models.values():
        port = free_port()
        proc = start(["demo-model", "--port", str(port), "--protocol", model.endpoint_protocol, "--name", model.name],
                     env=dict(model.env))
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        if not wait_ready(f"{url}/readyz", proc):
            print(f"error: demo model for '{model.name}' did not start:\n{_stderr(proc)}", file=sys.stderr)
            return None
        print(f"{model.name}: {model.endpoint_protocol} echo server on {url} (stands in for {model.image})")
        backends[model.name] = url
    return backends


def exercise(catalog: Catalog, v4: Any, v5: Any) -> None:
    """List the catalogue and send one inference per model through the API."""
    models = v4.models.list(limit=100)
    print(f"v4 GET /v4/models: {[m.name for m in models.items]}")
    listed = v5.models.list(limit=100)
    print(f"v5 GET /v5/models: {[(m.name, m.status) for m in listed.items]}")
    for model in catalog.models.values():
        print(f"{model.name}: {call(model, v4, v5)}")


def call(model: Model, v4: Any, v5: Any) -> str:
    if model.is_async:  # queued: submit a task, poll it (serve runs a local nats-server and a forwarder)
        from ..api.auth import DEV_API_KEY
        from ..tasks.demo import submit_and_poll

        return submit_and_poll(str(v4.base_url), DEV_API_KEY, model)
    kind = model.model_type.upper()
    if model.api_version == "v4" and kind == "COMPLETION":
        out = v4.models.completions.create(model.name, prompt="hello from sgp-infra")
        return f"v4 completions -> {out.completions}"
    if model.api_version == "v4" and kind == "CHAT_COMPLETION":
        out = v4.models.chat_completions.create(model.name, prompt="hello from sgp-infra")
        return f"v4 chat-completions -> {out.chat_completion.message.content!r}"
    if model.api_version == "v4" and kind == "EMBEDDING":
        out = v4.models.embeddings.create(model.name, texts=["hello"])
        return f"v4 embeddings -> {len(out.embeddings)} vector(s)"
    out = v5.inference.create(model=f"launch/{model.name}", args={"prompt": "hello from sgp-infra"})
    return f"v5 inference -> {out.response}"


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        _out, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        return "(no output)"
    return (err or b"").decode(errors="replace")[-2000:]
