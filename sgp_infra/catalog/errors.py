"""Config errors that name the stack-config path they are about.

Every problem in a catalogue is reported as a :class:`ConfigError` so that a
user can jump straight to the offending key (``sgp-infra:models.x.gpus``) or fix
it with ``pulumi config set --path``.  Validation collects all of them before
anything is deployed; :class:`CatalogInvalid` carries the whole list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

NAMESPACE = "sgp-infra"


@dataclass(frozen=True, order=True)
class ConfigError:
    """One problem, located by its config path (``sgp-infra:models.a.gpus``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class CatalogInvalid(Exception):
    """Raised when a catalogue has one or more problems; holds all of them."""

    def __init__(self, errors: Iterable[ConfigError]):
        self.errors: list[ConfigError] = sorted(set(errors))
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.errors)
        head = f"the catalogue has {count} problem{'s' if count != 1 else ''}:"
        return "\n".join([head, *(f"  - {e}" for e in self.errors)])


def config_path(*parts: str | int) -> str:
    """Join path parts the way ``pulumi config set --path`` spells them.

    ``config_path("models", "llama", "command", 2)`` gives
    ``sgp-infra:models.llama.command[2]``.  Keys that are not plain identifiers
    are quoted with brackets, as Pulumi's path syntax expects.
    """
    out = NAMESPACE + ":"
    first = True
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _plain(part):
            out += part if first else f".{part}"
        else:
            out += f'["{part}"]'
        first = False
    return out


def _plain(key: str) -> bool:
    return bool(key) and all(c.isalnum() or c in "-_" for c in key)
