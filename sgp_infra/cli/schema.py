"""``schema``: the stack file's JSON Schema (or its field reference), for editors and docs.

Both are generated from the catalogue's pydantic models
(:mod:`sgp_infra.catalog.schema`); the committed copies are rewritten by
``python tools/generate_docs.py``.
"""

from __future__ import annotations

import argparse
import sys

HELP = "print the JSON Schema of a stack config file (for editors), or with --reference its field reference"

DESCRIPTION = """\
Prints the JSON Schema (draft 2020-12) of a whole stack config file: the
config: map with the sgp-infra:* keys, generated from the models that validate
the catalogue, with the SGP API's field descriptions and defaults. Editors
that use the YAML language server read it from a first line like

  # yaml-language-server: $schema=../schema/stack.schema.json

--reference prints the Markdown field reference (docs/catalogue.md) instead.
The committed copies (schema/stack.schema.json, docs/catalogue.md) are
regenerated with: python tools/generate_docs.py
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("schema", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", action="store_true", help="print the Markdown field reference instead")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..catalog.schema import reference_markdown, schema_text

    sys.stdout.write(reference_markdown() if args.reference else schema_text())
    return 0
