"""``python -m sgp_infra``: the command line.

Each subcommand lives in its own module with a ``register(subparsers)``
function; this module only assembles them and maps failures to exit codes, so
no command ever ends in a traceback for bad input.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import NoReturn, Optional, Sequence

from . import demo, demo_model, diff, forwarder, render, schema, serve, stacks, validate

COMMANDS = [demo, validate, render, diff, serve, forwarder, stacks, demo_model, schema]

EPILOG = """\
The catalogue lives in stacks/Pulumi.<stack>.yaml under the sgp-infra: keys
(templates, models, modelGroups). Every command reads it without Pulumi, so it
works in CI and on a laptop with no cluster.

examples:
  python -m sgp_infra validate --stack dev
  python -m sgp_infra validate --config-file path/to/Pulumi.prod.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    return _build()[0]


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser, by name (the README's synopsis is generated from them)."""
    return dict(_build()[1].choices)


def _build() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="python -m sgp_infra",
        description="Validate, render and serve an SGP model catalogue kept in Pulumi stack config.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser, sub


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser, sub = _build()
    args, extra = parser.parse_known_args(argv)
    if extra:
        unknown_arguments(sub.choices[args.command], extra)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `render --out - | head`
        return 0


def unknown_arguments(command: argparse.ArgumentParser, extra: Sequence[str]) -> NoReturn:
    """Exit 2 with the subcommand's usage (not the top level's) and the closest option to each unknown one.

    argparse reports arguments a subcommand does not know at the top level, whose
    usage line shows no options at all; ``validate --stak dev`` should point at
    ``--stack``.
    """
    options = sorted(set(re.findall(r"--[a-z][a-z0-9-]*", command.format_help())))
    hints = []
    for arg in extra:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=", 1)[0], options, n=1)
            if close:
                hints.append(f"{arg.split('=', 1)[0]}: did you mean {close[0]}?")
    message = f"unrecognized arguments: {' '.join(extra)}"
    command.error(message + (f" ({'; '.join(hints)})" if hints else ""))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
