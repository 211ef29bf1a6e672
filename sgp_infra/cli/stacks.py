"""``stacks``: the project's stacks, for CI matrices (all, or those marked for auto-deploy)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..catalog.sources import project_root
from .common import EXIT_USAGE, CatalogLoadFailed, load_path

HELP = "list the project's stacks (stacks/Pulumi.<name>.yaml); --auto-deploy: only those with sgp-infra:autoDeploy true"

DESCRIPTION = """\
Lists the stack names of the project's stack config files, one a line, or as a
JSON array with --format json (what a CI matrix takes).

With --auto-deploy only the stacks whose catalogue sets sgp-infra:autoDeploy
to true are listed; each stack is validated to read that flag, so an invalid
catalogue exits 1 with its problems rather than silently skipping a deploy.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("stacks", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--auto-deploy", action="store_true", help="only stacks marked sgp-infra:autoDeploy: true")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--dir", metavar="PATH", help="the stack config directory (default: the project's stacks/)")
    parser.set_defaults(run=run)


def stack_names(directory: Path) -> list[str]:
    """Stack names of ``Pulumi.<name>.yaml`` files in ``directory``, sorted."""
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in directory.glob("Pulumi.*.yaml") if p.is_file())


def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else project_root() / "stacks"
    if not directory.is_dir():
        print(f"error: {directory}: no such directory; run inside the project or pass --dir", file=sys.stderr)
        return EXIT_USAGE
    names = stack_names(directory)
    if args.auto_deploy:
        try:
            names = [name for name in names if load_path(directory / f"Pulumi.{name}.yaml").settings.auto_deploy]
        except CatalogLoadFailed as exc:
            return exc.code
    if args.format == "json":
        print(json.dumps(names))
    elif names:  # none: no output at all, not an empty line a `while read` loop would take for a stack
        print("\n".join(names))
    return 0
