"""Regenerate the files generated from the code: the stack JSON Schema, the catalogue
field reference and the README's command synopsis.

    python tools/generate_docs.py           # rewrite them
    python tools/generate_docs.py --check   # exit 1 naming the stale ones (what the tests check)

Why one script: each is derived from the code that it documents (the catalogue's
pydantic models, the command line's argparse parsers), so after changing that code
one command brings every copy up to date; tests fail while a copy is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generated() -> dict[Path, str]:
    """Each generated file and the content it should have."""
    from sgp_infra.catalog.schema import REFERENCE_PATH, SCHEMA_PATH, reference_markdown, schema_text
    from sgp_infra.cli.synopsis import readme_with_synopsis

    readme = ROOT / "README.md"
    return {
        ROOT / SCHEMA_PATH: schema_text(),
        ROOT / REFERENCE_PATH: reference_markdown(),
        readme: readme_with_synopsis(readme.read_text(encoding="utf-8")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args()
    stale = []
    for path, text in generated().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'} {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
