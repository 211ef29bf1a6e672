"""``validate``: check a stack's catalogue and print a one-line summary."""

from __future__ import annotations

import argparse

from .common import add_source_args, try_load_planned

HELP = "check a stack's catalogue; exit 0 with a summary, or 1 with every problem and its config path"

DESCRIPTION = """\
Reads the sgp-infra: keys of a stack config file and checks every template,
model and model group: field names and types, creation parameters against
their template's schema, references, GPU and worker settings, Kubernetes names,
and plans the Kubernetes objects, so a GPU type the stack's gpuProfile cannot
place is caught here too.

Valid: prints one line (templates, models, groups, GPUs by type at min/max
scale) and exits 0. Invalid: prints every problem, each with its config path,
and exits 1. A file that cannot be read exits 2.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("validate", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    catalog, _manifests, code = try_load_planned(args)
    if catalog is None:
        return code
    print(catalog.summary())
    return 0
