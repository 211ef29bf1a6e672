"""``serve``: run the catalogue API on a stack's catalogue.

Locally the catalogue is read from the stack file and status comes from
probing each model's healthcheck route; in a pod (``--status kubernetes``, the
default when ``KUBERNETES_SERVICE_HOST`` is set) it is read from the model
Deployments.  API keys come from ``SGP_INFRA_API_KEYS``; on a loopback address
with the variable unset, the documented dev key ``sgp-infra-dev-key`` is bound
to every account of the catalogue.  Any other address refuses to start without
keys.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import os
import socket
import sys
from typing import Mapping, Optional

from ..catalog import Catalog
from .common import EXIT_USAGE, add_source_args, try_load

HELP = "run the SGP v4/v5 API service on a stack's catalogue (default http://127.0.0.1:8080)"

DESCRIPTION = """\
Serves the catalogue of a stack config file over the SGP v4 and v5 routes, so
the official clients (scale-gp, scale-gp-beta) can read it:

  SGP_API_KEY=sgp-infra-dev-key python -c "import scale_gp; ..."

API keys: SGP_INFRA_API_KEYS='{"<key>": ["<account>", ...]}'. When it is unset
and --host is a loopback address, the dev key 'sgp-infra-dev-key' sees every
account of the catalogue; on any other address the service refuses to start.

Status: 'probe' asks each model's healthcheck route, 'kubernetes' reads the
model Deployments (in a pod), 'none' reports every model ready.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 picks one)")
    parser.add_argument("--status", choices=("auto", "kubernetes", "probe", "none"), default="auto",
                        help="where model status comes from (default: kubernetes in a pod, else probe)")
    parser.add_argument("--namespace", default=None,
                        help="namespace of the model Deployments (default: the stack's sgp-infra:namespace)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                        help="write one JSON log line per request (default on; --no-access-log saves its "
                             "cost on busy inference replicas, see docs/inference.md)")
    parser.add_argument("--express", action=argparse.BooleanOptionalAction, default=True,
                        help="answer non-streamed typed inference (completions, chat, embeddings, rerankings) "
                             "at the HTTP protocol level, without the ASGI stack (default on; same answers, "
                             "under half the CPU per request, see docs/inference.md)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="bind with SO_REUSEPORT, so several serve processes share --port and the kernel "
                             "spreads connections over them (one process uses one core; in a cluster, scale "
                             "the Deployment's replicas instead)")
    parser.add_argument("--backend", dest="backends", metavar="MODEL=URL", action="append", type=backend_arg,
                        default=[], help="send MODEL's inference to URL instead of its in-cluster Service "
                                         "(repeatable), e.g. --backend echo=http://127.0.0.1:5005")
    parser.set_defaults(run=run)


def backend_arg(text: str) -> tuple[str, str]:
    """``MODEL=URL`` → ``(model, url)``; argparse reports a malformed value as a usage error."""
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected MODEL=http://host:port, got {text!r}")
    return name, url.rstrip("/")


def unknown_backend_error(catalog: Catalog, backends: Mapping[str, str]) -> Optional[str]:
    """The error for ``--backend`` names that match no model (by name or object name), else ``None``.

    Checked before serving because a misspelt name is otherwise accepted
    silently: the model keeps its in-cluster Service URL, which does not
    resolve outside a cluster, and its calls hang.
    """
    known = {m.name for m in catalog.models.values()} | {m.object_name for m in catalog.models.values()}
    unknown = [name for name in backends if name not in known]
    if not unknown:
        return None
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(catalog.models), n=1)
        hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    models = ", ".join(sorted(catalog.models)) or "none"
    return f"--backend names no model of the catalogue: {', '.join(hints)}; its models: {models}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_keys(catalog: Catalog, host: str) -> Optional[dict[str, frozenset[str]]]:
    """Keys from the environment, the dev key on loopback, else ``None`` (after printing why)."""
    from ..api.auth import DEV_API_KEY, ENV_VAR, ApiKeysInvalid, api_keys_from_env

    try:
        keys = api_keys_from_env()
    except ApiKeysInvalid as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if keys is not None:
        return keys
    if not is_loopback(host):
        print(f"error: {ENV_VAR} is not set; refusing to serve on {host} without API keys. Set it to "
              """'{"<key>": ["<account>"]}' or listen on 127.0.0.1 to use the dev key.""", file=sys.stderr)
        return None
    accounts = frozenset({catalog.settings.account_id}
                         | {m.account_id for m in catalog.models.values()}
                         | {t.account_id for t in catalog.templates.values()}
                         | {g.account_id for g in catalog.groups.values()})
    print(f"note: {ENV_VAR} is not set; on this loopback address the dev API key '{DEV_API_KEY}' "
          f"sees accounts {', '.join(sorted(accounts))}", file=sys.stderr)
    return {DEV_API_KEY: accounts}


def build_status(kind: str, catalog: Catalog, namespace: Optional[str], backends: dict[str, str]):  # type: ignore[no-untyped-def]
    from ..api.common import model_base_url
    from ..api.status import ProbeStatus, StaticStatus

    if kind == "auto":
        kind = "kubernetes" if os.environ.get("KUBERNETES_SERVICE_HOST") else "probe"
    if kind == "none":
        return StaticStatus()
    if kind == "kubernetes":
        from ..api.kube_status import KubeStatus

        return KubeStatus(namespace or catalog.settings.namespace)
    ns = catalog.settings.namespace
    return ProbeStatus({m.object_name: model_base_url(m, backends, ns) + m.healthcheck_route
                        for m in catalog.models.values()})


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The service's listening TCP socket, bound here so a taken port is a clear error.

    ``reuse_port`` sets ``SO_REUSEPORT``: other processes may listen on the same port.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=2048, reuse_port=reuse_port)


def tune_gc() -> None:
    """Garbage-collector settings for a long-running request server.

    * ``gc.freeze()`` after start-up moves the catalogue, the app and every
      imported module out of the collector's reach: they live as long as the
      process, and full collections no longer walk them.
    * A first-generation threshold of 7,000 instead of 700: each inference
      request allocates dozens of short-lived containers (aiohttp, Starlette),
      so the default ran a collection every few requests.  Measured on the
      benchmark, the collector went from about 14% of the API's CPU time to
      under 2%.  Cyclic garbage is still collected, just in larger batches.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(7000, gen1, gen2)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..api import create_app, http_protocol
        from ..api.logs import configure_json_logging, flush_access_lines
    except ImportError as exc:
        print(f"error: serving needs the api extra ({exc.name} is missing): pip install 'sgp-infra[api]'",
              file=sys.stderr)
        return EXIT_USAGE
    catalog, code = try_load(args)
    if catalog is None:
        return code
    backends: dict[str, str] = dict(args.backends)
    problem = unknown_backend_error(catalog, backends)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    keys = resolve_keys(catalog, args.host)
    if keys is None:
        return EXIT_USAGE
    status = build_status(args.status, catalog, args.namespace, backends)
    app = create_app(catalog, api_keys=keys, status_source=status, stack=args.stack, backends=backends)
    configure_json_logging(access_log=args.access_log)
    try:
        sock = listening_socket(args.host, args.port, reuse_port=args.reuse_port)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    print(f"serving {catalog.summary()} on http://{args.host}:{sock.getsockname()[1]}", file=sys.stderr)
    tune_gc()
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None, access_log=False,
                            log_level=args.log_level, http=http_protocol(app, express=args.express))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        flush_access_lines()
    return 0
