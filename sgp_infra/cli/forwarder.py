"""``forwarder``: run one ASYNC model's task forwarder (the pod's sidecar, or beside a local backend)."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_USAGE, add_source_args, missing_api_extra, port_number, try_load

HELP = "pull an ASYNC model's tasks from NATS JetStream and call the model (the model pod's sidecar)"

DESCRIPTION = """\
Pulls the model's tasks from its JetStream consumer (at most per_worker at
once), POSTs each task's args to the model's predict_route at --backend,
writes the answer or the failure to the results bucket, then acknowledges.
SIGTERM stops pulling and finishes held tasks within --drain-seconds.

  python -m sgp_infra forwarder --stack dev --model transcriber \\
      --backend http://127.0.0.1:5005 --nats nats://127.0.0.1:4222

Probes on --port: /healthz, /readyz (NATS connected and the model healthy), /metrics.

NATS credentials come from the environment: SGP_INFRA_NATS_TOKEN, or
SGP_INFRA_NATS_USER and SGP_INFRA_NATS_PASSWORD (none: no auth). A server that
refuses them is logged as an error and named in /readyz's 503.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("forwarder", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(parser)
    parser.add_argument("--model", required=True, help="the ASYNC model (name or id)")
    parser.add_argument("--backend", required=True, metavar="URL", help="the model server, e.g. http://127.0.0.1:5005")
    parser.add_argument("--nats", metavar="URL", default=None,
                        help="NATS server (default: sgp-infra:async.natsUrl, else the stack's in-cluster NATS)")
    parser.add_argument("--host", default="127.0.0.1", help="address of the probe/metrics port (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8081, help="probe/metrics port (default 8081; 0 picks one)")
    parser.add_argument("--drain-seconds", type=float, default=55.0, metavar="SECONDS",
                        help="on SIGTERM, how long held tasks may finish before they return to the queue "
                             "(default 55)")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..plan.nats import client_url
        from ..tasks.auth import NatsAuthInvalid, auth_vars
        from ..tasks.service import UnknownAsyncModel, build_forwarder, forwarder_app
        from .serve import listen_error, listening_socket
    except ImportError as exc:
        return missing_api_extra("the forwarder", exc)
    if not args.backend.startswith(("http://", "https://")):
        print(f"error: --backend must be an http(s) URL, got {args.backend!r}", file=sys.stderr)
        return EXIT_USAGE
    catalog, code = try_load(args)
    if catalog is None:
        return code
    try:
        forwarder = build_forwarder(catalog, args.model, args.backend, args.nats or client_url(catalog.settings))
    except (UnknownAsyncModel, NatsAuthInvalid) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    app = forwarder_app(forwarder, args.drain_seconds)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False,
                            timeout_graceful_shutdown=int(args.drain_seconds) + 5)
    # Bound here so a taken --port is one clear line (uvicorn's own bind failure exits 3 after its log line).
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        print(listen_error(args.host, args.port, exc), file=sys.stderr)
        return EXIT_USAGE
    # It connects in the background and retries forever, quietly at the default log level, so say where
    # it looks and where to see whether it got there.
    credentials = auth_vars(forwarder.broker.auth)
    print(f"forwarder for '{args.model}': tasks from {forwarder.broker.url} (credentials: {credentials}), "
          f"model at {args.backend}; "
          f"probes on http://{args.host}:{sock.getsockname()[1]}/readyz (503 until NATS and the model answer)",
          file=sys.stderr)
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
    return 0
