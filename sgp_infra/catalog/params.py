"""Model creation parameters: checking them against a template's schema and
injecting them where the template writes ``${name}``.

This is llm-engine's behaviour (placeholders filled at model creation) without
its stringly-typed templating: parameters are type-checked first, every
placeholder must be declared, and injection happens on already-parsed lists
and maps, never on a serialized document.  ``$${x}`` writes a literal ``${x}``.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, Mapping

from .entities import ParameterSchemaField

_PLACEHOLDER = re.compile(r"\$(\$)?\{([^{}]*)\}")
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}


def placeholders(text: str) -> Iterator[str]:
    """Names of the ``${name}`` placeholders in ``text`` (escaped ones excluded)."""
    for match in _PLACEHOLDER.finditer(text):
        if not match.group(1):
            yield match.group(2)


def render_value(value: Any) -> str:
    """How a parameter value is written into a command or env value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def inject(text: str, params: Mapping[str, Any]) -> str:
    """Replace every ``${name}`` in ``text``; ``KeyError`` names a missing one."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        return render_value(params[match.group(2)])

    return _PLACEHOLDER.sub(replace, text)


def type_problem(expected: str, value: Any) -> str | None:
    """Why ``value`` is not of the schema type ``expected``, or ``None``."""
    allowed = _PY_TYPES[expected]
    if isinstance(value, bool) and expected != "bool":
        return f"expected {expected}, got bool {value!r}"
    if not isinstance(value, allowed):
        return f"expected {expected}, got {type(value).__name__} {value!r}"
    return None


def check_parameters(
    fields: Iterable[ParameterSchemaField], given: Mapping[str, Any], template_name: str, *, complete: bool = True
) -> Iterable[tuple[str, str]]:
    """Yield ``(parameter, problem)`` for each way ``given`` breaks the declared ``fields``.

    ``complete=False`` says some declarations could not be read (an invalid
    template): a given name that is not among ``fields`` may be one of them, so
    it is not reported.
    """
    declared = {field.name: field for field in fields}
    for name, field in declared.items():
        if name not in given:
            if field.required:
                yield name, f"required by template '{template_name}'"
            continue
        problem = type_problem(field.type, given[name])
        if problem:
            yield name, f"{problem} (template '{template_name}' declares it {field.type})"
    for name in given:
        if name not in declared and complete:
            known = ", ".join(sorted(declared)) or "none"
            yield name, f"template '{template_name}' declares no such parameter (it declares: {known})"
