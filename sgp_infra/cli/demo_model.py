"""``demo-model``: run the deterministic echo model server on a local port.

With it, the whole path (stack config → ``serve --backend`` → official client
→ model) runs on a laptop with no GPU and no cluster.
"""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_USAGE, port_number

HELP = "run a tiny deterministic echo model server speaking SGP, VLLM (OpenAI) or COHERE"

DESCRIPTION = """\
Starts an echo model server: completions echo the prompt (prefixed by
--greeting or $DEMO_GREETING), chat echoes the last user message, embeddings
are derived from a hash of each text, rerank scores are word overlap. Streams
send the echo word by word.

  SGP     POST /predict, POST /generate_streaming (SSE)
  VLLM    POST /v1/completions, /v1/chat/completions (stream: true -> SSE), /v1/embeddings
  COHERE  POST /v1/generate (stream: true -> JSON lines), /v1/embed, /v1/rerank
  all     GET /readyz, /health, /healthz

SGP serves --predict-route/--streaming-route paths too (a model's own routes);
VLLM and COHERE answer any POST path by the shape its suffix names
(.../chat/completions, .../completions, .../embeddings, .../generate, .../embed,
.../rerank), as the API reads a route.

example (a real inference round trip on a laptop):
  python -m sgp_infra demo-model --port 5005 --protocol SGP --name echo &
  python -m sgp_infra serve --stack dev --backend echo=http://127.0.0.1:5005
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo-model", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=5005, help="port to listen on (default 5005, Launch's)")
    parser.add_argument("--protocol", type=str.upper, choices=("SGP", "VLLM", "COHERE"), default="SGP",
                        help="wire protocol to speak (default SGP)")
    parser.add_argument("--name", default="demo", help="model name the server reports (default demo)")
    parser.add_argument("--greeting", default=None, help="prefix of every echo (default $DEMO_GREETING or none)")
    parser.add_argument("--dim", type=int, default=8, help="embedding dimension (default 8)")
    parser.add_argument("--token-delay", type=float, default=0.0, metavar="SECONDS",
                        help="pause between streamed words (default 0)")
    parser.add_argument("--predict-route", dest="predict_routes", metavar="PATH", action="append", default=[],
                        help="SGP: also answer predictions at PATH (repeatable; /predict always)")
    parser.add_argument("--streaming-route", dest="streaming_routes", metavar="PATH", action="append", default=[],
                        help="SGP: also stream at PATH (repeatable; /generate_streaming always); a path that is "
                             "also a --predict-route streams when the body has stream: true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..demo_model import DemoModel
    from .serve import listen_error, listening_socket

    if args.dim < 1 or args.token_delay < 0:
        print("error: --dim must be at least 1 and --token-delay at least 0", file=sys.stderr)
        return EXIT_USAGE
    app = DemoModel(args.protocol, name=args.name, greeting=args.greeting, dim=args.dim,
                    token_delay=args.token_delay, predict_routes=args.predict_routes,
                    streaming_routes=args.streaming_routes)
    # Bound here, not by uvicorn: a taken port is then our one-line error, not uvicorn's log line and exit 3
    # after this command already said where it listens.
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        print(listen_error(args.host, args.port, exc), file=sys.stderr)
        return EXIT_USAGE
    port = sock.getsockname()[1]
    print(f"demo model '{args.name}' speaking {args.protocol} on http://{args.host}:{port}", file=sys.stderr)
    with sock:
        uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
    return 0
