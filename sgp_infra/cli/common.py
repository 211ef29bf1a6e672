"""Arguments and catalogue loading shared by every subcommand."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

from ..catalog import Catalog, CatalogInvalid, SourceError, load_file
from ..catalog.sources import resolve_config_file, stack_name_of
from ..heap import freeze_long_lived

EXIT_INVALID = 1
EXIT_USAGE = 2


def add_source_args(parser: argparse.ArgumentParser) -> None:
    """``--stack NAME | --config-file PATH``: which stack config to read."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--stack", metavar="NAME",
                       help="stack name: reads stacks/Pulumi.NAME.yaml of the project (default: $PULUMI_STACK)")
    group.add_argument("--config-file", metavar="PATH", help="a stack config file anywhere")


def port_number(text: str) -> int:
    """An argparse type for ``--port``: 0 (pick a free one) to 65535, else a usage error, not a bind traceback."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 (a free one) to 65535, got {text!r}")
    return value


def config_file_of(args: argparse.Namespace) -> Path:
    return resolve_config_file(args.stack, args.config_file)


def stack_of(args: argparse.Namespace) -> Optional[str]:
    """The stack name: ``--stack``, else the ``Pulumi.<stack>.yaml`` name of ``--config-file``, else
    ``$PULUMI_STACK`` (what ``pulumi up`` would pass the API container for the same file)."""
    if args.stack:
        return str(args.stack)
    if args.config_file:
        return stack_name_of(args.config_file)
    return os.environ.get("PULUMI_STACK") or None


class CatalogLoadFailed(Exception):
    """Loading failed and the reason was already printed; carries the exit code."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def load_catalog(args: argparse.Namespace) -> Catalog:
    """Load and validate; on failure print why to stderr and raise CatalogLoadFailed."""
    try:
        path = config_file_of(args)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise CatalogLoadFailed(EXIT_USAGE) from None
    return load_path(path)


def load_path(path: Path) -> Catalog:
    """Load and validate one stack file; on failure print why and raise CatalogLoadFailed."""
    try:
        return load_file(path)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise CatalogLoadFailed(EXIT_USAGE) from None
    except CatalogInvalid as exc:
        print(f"{path}: {exc.render()}", file=sys.stderr)
        raise CatalogLoadFailed(EXIT_INVALID) from None


def try_load(args: argparse.Namespace) -> tuple[Optional[Catalog], int]:
    """``(catalog, 0)`` or ``(None, exit_code)`` after printing the problems."""
    try:
        return load_catalog(args), 0
    except CatalogLoadFailed as exc:
        return None, exc.code


def try_load_planned(args: argparse.Namespace) -> tuple[Optional[Catalog], list[dict[str, Any]], int]:
    """Load, validate and plan every object of the stack.

    Some problems only the planner can see (a GPU type the stack's GPU profile
    cannot place, ``min_workers: 0`` under the HPA autoscaler), so every
    command that says a catalogue is valid plans it too.  Returns
    ``(catalog, manifests, 0)`` or ``(None, [], exit_code)`` after printing.
    """
    from ..plan import plan_catalog
    from ..plan.api import plan_api

    # This is a one-shot command: the imported modules (and below, the
    # catalogue and its manifests) live until it ends (sgp_infra/heap.py).
    freeze_long_lived()
    catalog, code = try_load(args)
    if catalog is None:
        return None, [], code
    try:
        # The API's keys Secret is never planned as a manifest: its value is a Pulumi secret.
        manifests = plan_catalog(catalog).manifests + plan_api(catalog, stack_of(args))
    except CatalogInvalid as exc:
        print(f"{config_file_of(args)}: {exc.render()}", file=sys.stderr)
        return None, [], EXIT_INVALID
    freeze_long_lived()
    return catalog, manifests, 0


def missing_api_extra(what: str, exc: ImportError) -> int:
    """Say that ``what`` needs the ``api`` extra (the module ``exc`` names is missing); the usage exit code."""
    print(f"error: {what} needs the api extra ({exc.name} is missing): pip install 'sgp-infra[api]'",
          file=sys.stderr)
    return EXIT_USAGE
