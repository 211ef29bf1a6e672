"""A :class:`CatalogDiff` as Markdown (a PR comment) or JSON (for machines).

Both carry the same content.  The Markdown starts with a hidden marker naming
the stack file, so CI can find and update its previous comment instead of
adding a new one on every push.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Sequence

from ..catalog import ConfigError
from .compare import CatalogDiff, EntityDiff, FieldChange, GpuRow, ResolvedChange, Warning

NO_CHANGES = "no catalogue changes"
MAX_VALUE = 80


def marker(stack_file: str) -> str:
    """The hidden HTML comment CI uses to find this stack's comment."""
    return f"<!-- sgp-infra catalogue diff: {stack_file} -->"


def headline(diff: CatalogDiff) -> str:
    """One line: counts of what changed, and how many models restart."""
    if not diff.changed:
        return NO_CHANGES
    parts: list[str] = []
    for label, items in (("model", diff.models), ("template", diff.templates), ("group", diff.groups)):
        for status in ("added", "removed", "changed"):
            n = sum(1 for d in items if d.status == status)
            if n:
                parts.append(f"{n} {label}{'s' if n != 1 else ''} {status}")
    if diff.settings:
        parts.append(f"{len(diff.settings)} setting{'s' if len(diff.settings) != 1 else ''} changed")
    restarting = len(diff.restarting_models)
    parts.append(f"{restarting} model{' restarts' if restarting == 1 else 's restart'} pods")
    return ", ".join(parts)


# -- Markdown -----------------------------------------------------------------


def to_markdown(diff: CatalogDiff, stack_file: str, base: str) -> str:
    lines = [marker(stack_file), f"### Catalogue diff: `{stack_file}` (base `{base}`)", ""]
    if not diff.changed and not diff.warnings:
        lines.append(f"✅ {NO_CHANGES}")
        return "\n".join(lines) + "\n"
    lines += [f"**{headline(diff)}**", ""]
    if diff.warnings:
        lines += ["#### ⚠️ Warnings", ""]
        lines += [f"- {w.message}" for w in diff.warnings]
        lines.append("")
    if diff.gpus:
        lines += _gpu_table(diff.gpus)
    if diff.models:
        lines += ["#### Models", "", "| model | change | pods |", "| --- | --- | --- |"]
        lines += [f"| `{d.name}` | {d.status} | {_pods_effect(d)} |" for d in diff.models]
        lines.append("")
        lines += _details(diff.models)
    if diff.api_restarts:
        lines += ["The catalogue API's pods roll to load the new catalogue (no model restarts for that).", ""]
    if diff.templates:
        lines += ["#### Templates", ""]
        for d in diff.templates:
            if d.status == "changed":
                rolls = (f"rolls {len(d.rolls)} model{'s' if len(d.rolls) != 1 else ''}: "
                         + ", ".join(f"`{m}`" for m in d.rolls)) if d.rolls else "no model restarts"
                lines.append(f"- `{d.name}`: changed ({rolls})")
            else:
                lines.append(f"- `{d.name}`: {d.status}")
            lines += [f"  - {_field_text(c)}" for c in d.fields]
        lines.append("")
    if diff.groups:
        lines += ["#### Groups", ""]
        for d in diff.groups:
            members = []
            if d.members_added:
                members.append("joins: " + ", ".join(f"`{m}`" for m in d.members_added))
            if d.members_removed:
                members.append("leaves: " + ", ".join(f"`{m}`" for m in d.members_removed))
            lines.append(f"- `{d.name}`: {d.status}" + (f" ({'; '.join(members)})" if members else ""))
            lines += [f"  - {_field_text(c)}" for c in d.fields]
        lines.append("")
    if diff.settings:
        lines += ["#### Stack settings", ""]
        lines += [f"- {_field_text(c, full_path=True)}" for c in diff.settings]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def invalid_markdown(stack_file: str, base: str, errors: Sequence[ConfigError], hints: Sequence[Warning]) -> str:
    """The PR comment for a current catalogue that does not validate."""
    lines = [marker(stack_file), f"### Catalogue diff: `{stack_file}` (base `{base}`)", "",
             f"❌ **the catalogue is invalid ({len(errors)} problem{'s' if len(errors) != 1 else ''})**; "
             "nothing can be deployed until it is fixed:", ""]
    lines += [f"- `{e.path}`: {e.message}" for e in errors]
    if hints:
        lines += ["", "#### ⚠️ Why", ""] + [f"- {h.message}" for h in hints]
    return "\n".join(lines) + "\n"


def _gpu_table(rows: Sequence[GpuRow]) -> list[str]:
    with_quota = any(r.quota is not None for r in rows)
    head = "| GPU type | at min scale | at max scale |" + (" quota |" if with_quota else "")
    sep = "| --- | ---: | ---: |" + (" ---: |" if with_quota else "")
    out = ["#### GPU capacity (GPUs per type)", "", head, sep]
    for r in rows:
        cells = [f"`{r.gpu_type}`", _arrow(r.min_before, r.min_after), _arrow(r.max_before, r.max_after)]
        if with_quota:
            cells.append("" if r.quota is None else (f"{r.quota} ❗" if r.max_after > r.quota else str(r.quota)))
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def _arrow(before: int, after: int) -> str:
    return str(after) if before == after else f"{before} → **{after}**"


def _pods_effect(d: EntityDiff) -> str:
    if d.status == "added":
        return "new pods"
    if d.status == "removed":
        return "pods deleted"
    if d.restarts:
        via = f" via template `{d.via_template}`" if d.via_template else ""
        return f"🔄 **restart**{via} ({', '.join(d.restart_fields)})"
    if d.scale_fields:
        return f"no restart: scaling only ({', '.join(d.scale_fields)})"
    return "no restart"


def _details(models: Sequence[EntityDiff]) -> list[str]:
    out = ["<details><summary>Field-level changes</summary>", ""]
    for d in models:
        out.append(f"- `{d.name}` ({d.status})" + (f": {d.facts}" if d.facts else ""))
        if d.fields:
            out.append("  - edited:")
            out += [f"    - {_field_text(c)}" for c in d.fields]
        if d.resolved:
            out.append("  - resolved:" if d.fields else f"  - resolved (through template `{d.via_template}`):"
                       if d.via_template else "  - resolved:")
            out += [f"    - {_resolved_text(c)}" for c in d.resolved]
    return out + ["", "</details>", ""]


def _resolved_text(c: ResolvedChange) -> str:
    if c.field == "pod template":
        return "the planned pod template differs (a stack setting changed): restarts pods"
    return f"`{c.field}`: {_value(c.before)} → {_value(c.after)} ({_effect_text(c.effect)})"


def _effect_text(effect: str) -> str:
    return {"restart": "restarts pods", "scale": "scaling only", "none": "catalogue only"}[effect]


def _field_text(c: FieldChange, full_path: bool = False) -> str:
    name = c.path if full_path else c.field
    return f"`{name}`: {_value(c.before)} → {_value(c.after)}"


def _value(value: Any) -> str:
    if value is None:
        return "*(unset)*"
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    if len(text) > MAX_VALUE:
        text = text[: MAX_VALUE - 1] + "…"
    return "`" + text.replace("`", "'") + "`"


# -- JSON ---------------------------------------------------------------------


def to_json_data(diff: CatalogDiff, stack_file: str, base: str) -> dict[str, Any]:
    """The diff as plain JSON-able data (same content as the Markdown)."""

    def entity(d: EntityDiff) -> dict[str, Any]:
        data = asdict(d)
        data["restart_fields"] = list(d.restart_fields)
        data["scale_fields"] = list(d.scale_fields)
        return data

    return {
        "stack_file": stack_file,
        "base": base,
        "valid": True,
        "changed": diff.changed,
        "summary": headline(diff),
        "has_base": diff.has_base,
        "api_restarts": diff.api_restarts,
        "restarting_models": list(diff.restarting_models),
        "templates": [entity(d) for d in diff.templates],
        "models": [entity(d) for d in diff.models],
        "groups": [entity(d) for d in diff.groups],
        "settings": [asdict(c) for c in diff.settings],
        "gpus": [{"gpu_type": r.gpu_type, "min": {"before": r.min_before, "after": r.min_after},
                  "max": {"before": r.max_before, "after": r.max_after}, "quota": r.quota} for r in diff.gpus],
        "warnings": [asdict(w) for w in diff.warnings],
    }


def to_json(diff: CatalogDiff, stack_file: str, base: str) -> str:
    return json.dumps(to_json_data(diff, stack_file, base), indent=2, default=str) + "\n"


def invalid_json(stack_file: str, base: str, errors: Sequence[ConfigError], hints: Sequence[Warning]) -> str:
    data = {
        "stack_file": stack_file, "base": base, "valid": False,
        "errors": [{"path": e.path, "message": e.message} for e in errors],
        "warnings": [asdict(h) for h in hints],
    }
    return json.dumps(data, indent=2) + "\n"
