"""``diff``: what a catalogue change does, as a PR comment or as JSON."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..catalog import CatalogInvalid, SourceError, raw_from_stack_doc, read_stack_file
from ..catalog.sources import catalog_from_doc
from ..diff import (
    BaseUnavailable,
    dangling_group_members,
    diff_catalogs,
    headline,
    invalid_json,
    invalid_markdown,
    load_base,
    to_json,
    to_markdown,
)
from ..plan import plan_catalog
from .common import EXIT_INVALID, EXIT_USAGE, add_source_args, config_file_of

HELP = "compare a stack's catalogue with a base (git ref or file): changes, pod restarts, GPUs, warnings"

DESCRIPTION = """\
Compares the catalogue in a stack file with a base version of it and prints
what the change does, as Markdown for a pull-request comment (default) or JSON:

  - templates, models and groups added, removed or changed, field by field;
  - which models restart their pods (image, command, env, resources, GPU
    placement; a template change rolls every model built from it) and which
    changes only rescale (min/max workers, per_worker) or touch the catalogue;
  - GPUs per type at min and at max scale, before -> after;
  - warnings: a high-priority model that can now scale to zero, a template
    change that rolls N models, a GPU quota exceeded, a removed model a group
    still lists.

--base is a file if that file exists, else a git ref: the same stack file is
read at that ref with `git show REF:path` (a ref without the file means a new
stack: everything is added).

Exit codes: 0 the diff was printed (or "no catalogue changes"); 1 the current
catalogue is invalid (its problems are printed); 2 the stack file or the base
cannot be found.
"""

EPILOG = """\
examples:
  python -m sgp_infra diff --stack prod --base origin/main
  python -m sgp_infra diff --config-file stacks/Pulumi.dev.yaml --base old/Pulumi.dev.yaml --format json
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("diff", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(parser)
    parser.add_argument("--base", required=True, metavar="GIT_REF|FILE",
                        help="what to compare with: a stack file, or a git ref (branch, tag, commit)")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown",
                        help="markdown (a PR comment; default) or json")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        path = config_file_of(args)
        doc = read_stack_file(path)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        raw = raw_from_stack_doc(doc)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CatalogInvalid:  # a secret where none belongs: catalog_from_doc reports it below
        raw = {}
    try:
        base = load_base(args.base, path)
    except BaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    label = _display(path)
    try:
        # build_catalog(raw), with stray keys (`models:`) and misplaced secrets reported too
        current = catalog_from_doc(doc)
        current_plan = plan_catalog(current)  # problems only planning finds (e.g. an unplaceable GPU type)
    except CatalogInvalid as exc:
        hints = dangling_group_members(base.catalog, raw)
        render = invalid_json if args.format == "json" else invalid_markdown
        sys.stdout.write(render(label, base.label, exc.errors, hints))
        n = len(exc.errors)
        print(f"error: {label}: the catalogue is invalid ({n} problem{'s' if n != 1 else ''}, listed above); "
              f"fix them, then check with: python -m sgp_infra validate --config-file {label}", file=sys.stderr)
        return EXIT_INVALID
    diff = diff_catalogs(base.catalog, current, base.problem, current_plan=current_plan)
    if args.format == "json":
        sys.stdout.write(to_json(diff, label, base.label))
    elif not diff.changed and not diff.warnings:
        print(headline(diff))
    else:
        sys.stdout.write(to_markdown(diff, label, base.label))
    return 0


def _display(path: Path) -> str:
    """The stack file relative to the working directory when it is below it."""
    try:
        rel = os.path.relpath(path.resolve(), Path.cwd())
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else Path(rel).as_posix()
