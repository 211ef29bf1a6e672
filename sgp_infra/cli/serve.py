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
import errno
import ipaddress
import os
import socket
import sys
from typing import Any, Mapping, Optional

from ..catalog import Catalog
from ..tasks.local import add_local_async_args, start_local_async
from .common import EXIT_USAGE, add_source_args, config_file_of, missing_api_extra, port_number, try_load
from .serving import dev_keys

HELP = "run the SGP v4/v5 API service on a stack's catalogue (default http://127.0.0.1:8080)"

DESCRIPTION = """\
Serves the catalogue of a stack config file over the SGP v4 and v5 routes, so
the official clients (scale-gp, scale-gp-beta) can read it:

  SGP_API_KEY=sgp-infra-dev-key python -c "import scale_gp; ..."

API keys: SGP_INFRA_API_KEYS='{"<key>": ["<account>", ...]}'. When it is unset
and --host is a loopback address, the dev key 'sgp-infra-dev-key' sees every
account of the catalogue; on any other address the service refuses to start.

ASYNC models: the NATS credentials (of --nats, or sgp-infra:async.natsUrl) come
from SGP_INFRA_NATS_TOKEN, or SGP_INFRA_NATS_USER and SGP_INFRA_NATS_PASSWORD;
the forwarders serve starts inherit them.

Status: 'probe' asks each model's healthcheck route, 'kubernetes' reads the
model Deployments (in a pod), 'none' reports every model ready.

Writes answer 405 with the pulumi commands that make the change: for --stack
NAME (or $SGP_INFRA_STACK, which the cluster's API Deployment sets) they name
stacks/Pulumi.NAME.yaml and `--stack NAME`; for --config-file PATH alone they
name PATH and add `--config-file PATH`.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8080, help="port to listen on (default 8080; 0 picks one)")
    parser.add_argument("--status", choices=("auto", "kubernetes", "probe", "none"), default="auto",
                        help="where model status comes from (default: kubernetes in a pod, else probe)")
    parser.add_argument("--namespace", default=None,
                        help="namespace of the model Deployments (default: the stack's sgp-infra:namespace)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                        help="write one JSON log line per request (default on; --no-access-log saves its "
                             "cost on busy inference replicas, see docs/inference.md)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="worker processes sharing the port (default: the stack's sgp-infra:api.workers, "
                             "else 1); /metrics sums them")
    parser.add_argument("--reuse-port", action="store_true",
                        help="bind with SO_REUSEPORT, so several serve processes share --port and the kernel "
                             "spreads connections over them (one process uses one core; in a cluster, scale "
                             "the Deployment's replicas instead)")
    add_limit_args(parser)
    parser.add_argument("--backend", dest="backends", metavar="MODEL=URL,...", action="append",
                        type=backend_arg, default=[],
                        help="send MODEL's inference to URL instead of its in-cluster Service (repeatable), "
                             "e.g. --backend echo=http://127.0.0.1:5005; several URLs are the model's "
                             "replicas, routed by its strategy (docs/inference.md)")
    add_local_async_args(parser)  # ASYNC models: --nats, --nats-store, --no-forwarders (docs/async.md)
    parser.set_defaults(run=run)


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    """One flag per ``ApiLimits`` field (``SERVE_LIMIT_FLAGS``), its help from the field's description."""
    from ..catalog.settings import SERVE_LIMIT_FLAGS, ApiLimits

    group = parser.add_argument_group("client limits (default: the stack's sgp-infra:api.limits, else the "
                                      "value shown; see docs/api.md)")
    for name, flag in SERVE_LIMIT_FLAGS.items():
        info = ApiLimits.model_fields[name]
        parse: Any = info.annotation  # int or float: the field's own type parses the flag
        group.add_argument(flag, dest=name, type=parse, default=None, metavar="N",
                           help=f"{info.description} (default {info.default})")


def limits_of(args: argparse.Namespace, catalog: Catalog) -> dict[str, Any]:
    """The stack's ``sgp-infra:api.limits`` with the flags given on the command line on top."""
    from pydantic import ValidationError

    from ..catalog.settings import SERVE_LIMIT_FLAGS, ApiLimits

    base = catalog.settings.api.limits.model_dump()
    given = {name: getattr(args, name) for name in SERVE_LIMIT_FLAGS if getattr(args, name) is not None}
    try:
        return ApiLimits.model_validate({**base, **given}).model_dump()
    except ValidationError as exc:
        problems = [f"{SERVE_LIMIT_FLAGS.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()]
        raise ValueError("; ".join(problems)) from None


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def backend_arg(text: str) -> tuple[str, str]:
    """``MODEL=URL`` or ``MODEL=URL1,URL2,...`` → ``(model, "URL1,URL2")`` (no trailing
    slashes); argparse reports a malformed value as a usage error."""
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected MODEL=http://host:port[,http://host:port...], got {text!r}")
    if "," not in url:
        return name, url.rstrip("/")
    try:
        from ..api.inference.endpoints import parse_backend_urls
    except ImportError:  # no api extra: serve says so before using the value
        return name, url
    try:
        return name, ",".join(parse_backend_urls(url))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--backend {name}: {exc}") from None


def write_target(args: argparse.Namespace) -> tuple[Optional[str], Optional[str]]:
    """``(stack name, config file)`` the 405 answers name (``api.writes.config_source``).

    ``--stack``, else ``$SGP_INFRA_STACK`` (set by the planner in a pod, where
    ``--config-file`` is the published copy, not the file to edit), else the
    ``--config-file`` read, else ``$PULUMI_STACK``.
    """
    from ..plan.api import STACK_ENV

    if args.stack:
        return args.stack, None
    if os.environ.get(STACK_ENV):
        return os.environ[STACK_ENV], None
    if args.config_file:
        return None, args.config_file
    return os.environ.get("PULUMI_STACK") or None, None


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


def unrouted_models_note(catalog: Catalog, backends: Mapping[str, str],
                         environ: Mapping[str, str]) -> Optional[str]:
    """A note naming the models with no ``--backend`` when serving outside a cluster, else ``None``.

    Outside a pod their calls go to in-cluster Service names that do not
    resolve, so each call is held as a cold start (50 s by default) and ends in
    a 503; a first-time user who only ran ``serve --stack dev`` should learn why
    before waiting, and how to give the models somewhere to go.
    """
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    given = set(backends)
    missing = sorted(m.name for m in catalog.models.values() if m.name not in given and m.object_name not in given)
    if not missing:
        return None
    example = missing[0]
    return (f"note: no --backend for {', '.join(missing)}: outside a cluster their in-cluster Services "
            f"usually do not resolve, so their inference calls wait for a cold start and answer 503. "
            f"Give each a local server, e.g. `python -m sgp_infra demo-model --port 5005 &` and "
            f"`--backend {example}=http://127.0.0.1:5005`, "
            f"or run `python -m sgp_infra demo --keep-serving`, which starts them for you")


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
    dev = dev_keys(catalog)
    print(f"note: {ENV_VAR} is not set; on this loopback address the dev API key '{DEV_API_KEY}' "
          f"sees accounts {', '.join(sorted(dev[DEV_API_KEY]))}", file=sys.stderr)
    return dev


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The service's listening TCP socket, bound here so a taken port is a clear error.

    ``reuse_port`` sets ``SO_REUSEPORT``: other processes may listen on the same port.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=2048, reuse_port=reuse_port)


def listen_error(host: str, port: int, exc: OSError) -> str:
    """Why ``host:port`` cannot be listened on, and what to do about the usual cause (a taken port)."""
    message = f"error: cannot listen on {host}:{port}: {exc.strerror or exc}"
    if exc.errno == errno.EADDRINUSE:
        message += "; another process is listening there: stop it, or pick another --port (0 picks a free one)"
    return message


def nats_auth_problem(catalog: Catalog) -> Optional[str]:
    """Why the ``SGP_INFRA_NATS_*`` credentials are unusable, for a catalogue with ASYNC models; else ``None``."""
    from ..plan.nats import has_async
    from ..tasks.auth import NatsAuthInvalid, nats_auth

    if not has_async(catalog):
        return None
    try:
        nats_auth()
    except NatsAuthInvalid as exc:
        return str(exc)
    return None


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401 - checked here for the message below

        from ..api.logs import configure_json_logging
        from .serving import ServeOptions, run as run_server
    except ImportError as exc:
        return missing_api_extra("serving", exc)
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
    note = unrouted_models_note(catalog, backends, os.environ)
    if note is not None:
        print(note, file=sys.stderr)
    try:
        limits = limits_of(args, catalog)
    except ValueError as exc:  # a flag out of its range
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = nats_auth_problem(catalog)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    # The port first: taken, it is the one error, before a nats-server and forwarders start for nothing.
    try:
        sock = listening_socket(args.host, args.port, reuse_port=args.reuse_port)
    except OSError as exc:
        print(listen_error(args.host, args.port, exc), file=sys.stderr)
        return EXIT_USAGE
    try:
        local_async = start_local_async(catalog, args, backends)  # nats-server and forwarders (ASYNC)
    except RuntimeError as exc:  # no nats-server binary, or it would not start
        sock.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stack, writes_file = write_target(args)
    options = ServeOptions(
        config_file=str(config_file_of(args).resolve()), stack=stack, writes_file=writes_file, host=args.host,
        status=args.status, namespace=args.namespace, backends=backends, dev_key=keys == dev_keys(catalog),
        access_log=args.access_log, log_level=args.log_level,
        workers=args.workers or catalog.settings.api.workers, limits=limits, nats_url=local_async.url)
    configure_json_logging(access_log=args.access_log)
    workers = f" with {options.workers} workers" if options.workers > 1 else ""
    print(f"serving on http://{args.host}:{sock.getsockname()[1]}{workers}: {catalog.summary()}", file=sys.stderr)
    local_async.stop_on_sigterm()
    try:
        return run_server(options, sock, catalog)
    finally:
        local_async.stop()
