"""Where the base catalogue of a diff comes from: a file, or a git ref.

``--base`` names a file if such a file exists, else a git ref whose version of
the *same* stack file is read with ``git show REF:path``.  A ref that lacks the
file (a stack added by this change) is a valid base with nothing in it; a ref
that does not exist is an error, since a silent empty base would show every
model as new.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from ..catalog import Catalog, CatalogInvalid, SourceError, build_catalog, raw_from_stack_doc, read_stack_file


class BaseUnavailable(Exception):
    """The base could not be found at all (no such file or ref, no git)."""


@dataclass(frozen=True)
class BaseSource:
    """The base catalogue, or ``None`` with the reason there is none."""

    label: str
    catalog: Optional[Catalog]
    problem: Optional[str] = None


def load_base(base: str, stack_file: Path) -> BaseSource:
    """The base catalogue named by ``--base`` for ``stack_file``."""
    path = Path(base)
    if path.is_file():
        try:
            doc = read_stack_file(path)
        except SourceError as exc:
            return BaseSource(base, None, f"the base file cannot be read ({exc}); everything is shown as added")
        return _from_doc(base, doc)
    return _from_git(base, stack_file)


def _from_doc(label: str, doc: Any) -> BaseSource:
    try:
        raw = raw_from_stack_doc(doc)
        return BaseSource(label, build_catalog(raw))
    except SourceError as exc:
        return BaseSource(label, None, f"the base catalogue at {label} cannot be read ({exc}); "
                                       "everything is shown as added")
    except CatalogInvalid as exc:
        n = len(exc.errors)
        plural = "s" if n != 1 else ""
        return BaseSource(label, None, f"the base catalogue at {label} is invalid ({n} problem{plural}); "
                                       "everything is shown as added")


def _from_git(ref: str, stack_file: Path) -> BaseSource:
    if not ref or ref.startswith("-"):
        raise BaseUnavailable(f"--base {ref!r}: not a file, and not a usable git ref")
    where = stack_file.resolve().parent
    try:
        top = _git(where, "rev-parse", "--show-toplevel")
    except FileNotFoundError:
        raise BaseUnavailable(f"--base {ref}: no such file, and git is not installed to read it as a git ref") from None
    if top.returncode != 0:
        raise BaseUnavailable(f"--base {ref}: no such file, and {where} is not inside a git repository, "
                              "so it is not a git ref either; pass a stack file or run inside the repository")
    root = Path(top.stdout.strip()).resolve()
    if _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise BaseUnavailable(f"--base {ref}: no such file or git ref; give a branch, tag or commit "
                              "(in CI, fetch it first, e.g. `git fetch origin main` then --base origin/main)")
    try:
        rel = stack_file.resolve().relative_to(root).as_posix()
    except ValueError:
        raise BaseUnavailable(f"{stack_file} is outside the git repository at {root}; "
                              "pass the base as a file instead of a git ref") from None
    shown = _git(root, "show", f"{ref}:{rel}")
    if shown.returncode != 0:
        return BaseSource(ref, None, f"{rel} does not exist at {ref}: a new stack, everything is added")
    try:
        doc = yaml.safe_load(shown.stdout) or {}
    except yaml.YAMLError:
        return BaseSource(ref, None, f"{rel} at {ref} is not valid YAML; everything is shown as added")
    if not isinstance(doc, dict):
        return BaseSource(ref, None, f"{rel} at {ref} is not a stack config map; everything is shown as added")
    return _from_doc(ref, doc)


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
