"""Arguments and catalogue loading shared by every subcommand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from ..catalog import Catalog, CatalogInvalid, SourceError, load_file
from ..catalog.sources import resolve_config_file

EXIT_INVALID = 1
EXIT_USAGE = 2


def add_source_args(parser: argparse.ArgumentParser) -> None:
    """``--stack NAME | --config-file PATH``: which stack config to read."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--stack", metavar="NAME",
                       help="stack name: reads stacks/Pulumi.NAME.yaml of the project (default: $PULUMI_STACK)")
    group.add_argument("--config-file", metavar="PATH", help="a stack config file anywhere")


def config_file_of(args: argparse.Namespace) -> Path:
    return resolve_config_file(args.stack, args.config_file)


class CatalogLoadFailed(Exception):
    """Loading failed and the reason was already printed; carries the exit code."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def load_catalog(args: argparse.Namespace) -> Catalog:
    """Load and validate; on failure print why to stderr and raise CatalogLoadFailed."""
    try:
        path = config_file_of(args)
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
