"""The README's command synopsis, generated from the command line's own parsers.

Why: a hand-written synopsis drifts as flags are added.  ``synopsis()`` is
each subcommand's argparse usage line, so ``tools/generate_docs.py`` writes it
into README.md and a test fails when README.md's copy is stale.
"""

from __future__ import annotations

import argparse
import functools

#: The README line that precedes the generated block.
README_MARKER = "<!-- synopsis: generated from argparse by `python tools/generate_docs.py` -->"
WIDTH = 110


def usage_line(parser: argparse.ArgumentParser) -> str:
    """``parser``'s usage on one line, without ``usage:`` and ``[-h]`` (every command has --help)."""
    parser.formatter_class = functools.partial(argparse.HelpFormatter, width=10_000)
    text = parser.format_usage().strip()
    return " ".join(text.removeprefix("usage:").replace(" [-h]", "").split())


def synopsis() -> str:
    """One entry per subcommand, names aligned, long lines wrapped under the arguments."""
    from . import command_parsers

    parsers = command_parsers()
    width = max(len(name) for name in parsers)
    lines = []
    for name, parser in parsers.items():
        usage = usage_line(parser)
        prog = usage[:usage.index(name) + len(name)]
        rest = usage[len(prog):].strip()
        head = f"{prog}{' ' * (width - len(name))} "
        line = head
        for token in _arguments(rest):
            if len(line) + len(token) > WIDTH and line.strip() != prog:
                lines.append(line.rstrip())
                line = " " * len(head)
            line += token + " "
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def _arguments(usage: str) -> list[str]:
    """The usage's arguments: split on spaces outside ``[...]``, ``(...)`` and ``{...}``."""
    out, depth, current = [], 0, ""
    for char in usage:
        depth += char in "[({"
        depth -= char in "])}"
        if char == " " and depth == 0:
            if current:
                out.append(current)
            current = ""
        else:
            current += char
    if current:
        out.append(current)
    return out


def readme_with_synopsis(readme: str) -> str:
    """``readme`` with the fenced block after :data:`README_MARKER` replaced by :func:`synopsis`."""
    start = readme.index(README_MARKER) + len(README_MARKER)
    fence_open = readme.index("```\n", start) + len("```\n")
    fence_close = readme.index("```", fence_open)
    return readme[:fence_open] + synopsis() + readme[fence_close:]
