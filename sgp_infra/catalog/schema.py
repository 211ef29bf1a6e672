"""The stack file's JSON Schema and field reference, generated from the catalogue's models.

Why: a stack is written by hand, and an editor that knows its schema
completes field names and shows the SGP API's descriptions and defaults as
you type.  Both artefacts come from the pydantic models that validate the
catalogue (``model_json_schema``), so they cannot say something the validator
does not; they are committed (``schema/stack.schema.json``,
``docs/catalogue.md``) and a test fails when they are stale.  Regenerate with
``python tools/generate_docs.py``.

The schema describes a whole Pulumi stack file: its ``config:`` map holds the
``sgp-infra:*`` keys (settings beside the ``templates``, ``models`` and
``modelGroups`` maps, and the secrets ``apiKeys``, ``modelSecrets`` and ``natsCredentials`` as
Pulumi's ``secure:`` values); other namespaces' keys (``kubernetes:*``, ``pulumi:*``…) are left
alone, and an unknown ``sgp-infra:*`` key is an error.  Scalar settings also
take the strings ``pulumi config set`` writes (``"true"``, ``"2"``), as the
validator does.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Literal, Optional

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .entities import ModelGroup, ModelTemplate, ModelV4, ModelV5
from .errors import NAMESPACE
from .secrets import MODEL_SECRETS_KEY
from .settings import SECRET_DOCS, SECRET_KEYS, StackSettings

SCHEMA_PATH = "schema/stack.schema.json"
REFERENCE_PATH = "docs/catalogue.md"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

#: The catalogue maps: config key → (entity label, the models an entry may be).
ENTRIES: dict[str, tuple[str, tuple[type[BaseModel], ...]]] = {
    "templates": ("template", (ModelTemplate,)),
    "models": ("model (v4 or v5)", (ModelV4, ModelV5)),
    "modelGroups": ("model group", (ModelGroup,)),
}
#: The top-level entities, as the reference's columns name them.
ENTITIES: dict[str, type[BaseModel]] = {"template": ModelTemplate, "v4 model": ModelV4, "v5 model": ModelV5,
                                        "group": ModelGroup}


def _definitions() -> dict[str, Any]:
    """``$defs`` of every catalogue model and of the stack settings, titles dropped."""
    classes: list[type[BaseModel]] = [*ENTITIES.values(), StackSettings]
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [(cls, "validation") for cls in classes]
    _, top = models_json_schema(models, ref_template="#/$defs/{model}")
    definitions: dict[str, Any] = _without_titles(top["$defs"])
    return definitions


def _without_titles(node: Any) -> Any:
    """Drop pydantic's generated ``title``s (``"Registry"`` for ``registry``): noise in an editor."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                continue
            # a property named "title" would be a dict; keep walking into maps of properties
            out[key] = _without_titles(value)
        return out
    if isinstance(node, list):
        return [_without_titles(v) for v in node]
    return node


def _lax_scalar(prop: dict[str, Any]) -> dict[str, Any]:
    """A settings value as Pulumi may write it: ``pulumi config set`` stores scalars as strings."""
    kind = prop.get("type")
    if kind == "boolean":
        alt: Optional[dict[str, Any]] = {"type": "string", "enum": ["true", "false", "True", "False"]}
    elif kind == "integer":
        alt = {"type": "string", "pattern": r"^\s*-?[0-9]+\s*$"}
    else:
        alt = None
    if alt is None:
        return prop
    meta = {k: v for k, v in prop.items() if k in ("description", "default")}
    typed = {k: v for k, v in prop.items() if k not in ("description", "default")}
    return {"anyOf": [typed, alt], **meta}


def stack_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a stack config file with the ``sgp-infra`` namespace."""
    defs = _definitions()
    settings = defs.pop("StackSettings")
    prefix = NAMESPACE + ":"
    config_props: dict[str, Any] = {}
    for alias, prop in settings["properties"].items():
        config_props[prefix + alias] = _lax_scalar(prop)
    for key, (label, classes) in ENTRIES.items():
        refs = [{"$ref": f"#/$defs/{cls.__name__}"} for cls in classes]
        config_props[prefix + key] = {
            "type": "object",
            "description": f"The stack's {label} entries, keyed by name.",
            "additionalProperties": refs[0] if len(refs) == 1 else {"anyOf": refs},
        }
    secure = {"type": "object", "properties": {"secure": {"type": "string"}}, "required": ["secure"],
              "additionalProperties": False}
    for key in sorted(SECRET_KEYS):
        shape, meaning = SECRET_DOCS[key]
        config_props[prefix + key] = {
            "description": f"Secret (pulumi config set --secret): {meaning} {shape}, stored encrypted as "
                           "Pulumi's secure value.",
            **secure,
        }
    # modelSecrets may also be set variable by variable (--secret --path): names in clear, values secure.
    config_props[prefix + MODEL_SECRETS_KEY] = {
        "description": config_props[prefix + MODEL_SECRETS_KEY]["description"],
        "anyOf": [secure, {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object", "minProperties": 1, "additionalProperties": secure}}],
    }
    config = {
        "type": "object",
        "description": "Stack configuration: sgp-infra's keys, and any other namespace's.",
        "properties": config_props,
        # other namespaces (kubernetes:, pulumi:, a program's own) are theirs to check
        "patternProperties": {f"^(?!{prefix})": {}},
        "additionalProperties": False,
        # a stack that uses sgp-infra at all names its account
        "if": {"not": {"propertyNames": {"not": {"pattern": f"^{prefix}"}}}},
        "then": {"required": [prefix + "accountId"]},
    }
    return {
        "$schema": DRAFT,
        "title": "sgp-infra stack config (stacks/Pulumi.<stack>.yaml)",
        "description": "A Pulumi stack config file whose sgp-infra:* keys are an SGP model catalogue. "
                       "Generated from sgp_infra/catalog by tools/generate_docs.py; field reference: "
                       + REFERENCE_PATH + ".",
        "type": "object",
        "properties": {
            "config": config,
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
            "encryptionsalt": {"type": "string"},
            "environment": {},
        },
        "$defs": defs,
    }


def schema_text() -> str:
    """The committed schema file's content."""
    return json.dumps(stack_schema(), indent=2, ensure_ascii=False) + "\n"


# --- the field reference -------------------------------------------------------------


def _type_text(prop: dict[str, Any]) -> str:
    """A property's type as the reference writes it (``null`` alternatives left out)."""
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        parts = [_type_text(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(parts)
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = prop.get("type")
    bounds = [f"{op} {prop[key]}" for key, op in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                                                  ("exclusiveMaximum", "<"), ("minLength", "length ≥"))
              if key in prop]
    if kind == "array":
        text = "list of " + _type_text(prop.get("items", {}))
    elif kind == "object":
        values = prop.get("additionalProperties")
        text = "map of " + (_type_text(values) if isinstance(values, dict) and values else "any")
    elif kind is None:
        text = "any"
    else:
        text = str(kind)
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _default_text(cls: type[BaseModel], field: str) -> str:
    info = cls.model_fields[field]
    if info.is_required():
        return "**required**"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its defaults"
    if value is None:
        return "—"
    return f"`{json.dumps(value)}`"


def _nested(prop: dict[str, Any]) -> Iterator[str]:
    """Names of the ``$defs`` a property refers to."""
    if "$ref" in prop:
        yield prop["$ref"].rsplit("/", 1)[-1]
    for key in ("anyOf", "items", "additionalProperties"):
        value = prop.get(key)
        for sub in value if isinstance(value, list) else [value] if isinstance(value, dict) else []:
            yield from _nested(sub)


def _classes() -> dict[str, type[BaseModel]]:
    """Every model class of the catalogue by name, found through the entities' fields."""
    out: dict[str, type[BaseModel]] = {}
    todo: list[type[BaseModel]] = [*ENTITIES.values(), StackSettings]
    while todo:
        cls = todo.pop(0)
        if cls.__name__ in out:
            continue
        out[cls.__name__] = cls
        for info in cls.model_fields.values():
            todo += _model_types(info.annotation)
    return out


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _model_types(arg)]


def _where_used(defs: dict[str, Any]) -> dict[str, list[str]]:
    """``{def name: ["template: vendor_configuration.bundle_config", ...]}``."""
    out: dict[str, list[str]] = {}

    def walk(name: str, where: str, path: str, seen: tuple[str, ...]) -> None:
        for field, prop in defs[name].get("properties", {}).items():
            for child in _nested(prop):
                if child in seen:
                    continue
                out.setdefault(child, []).append(f"{where}: `{path}{field}`")
                walk(child, where, f"{path}{field}.", (*seen, child))

    for label, cls in ENTITIES.items():
        walk(cls.__name__, label, "", (cls.__name__,))
    walk("StackSettings", "stack", f"{NAMESPACE}:", ("StackSettings",))
    return out


def reference_markdown() -> str:
    """``docs/catalogue.md``: every entity and field, with type, default, description and who takes it."""
    defs = _definitions()
    classes = _classes()
    used = _where_used(defs)
    lines = [
        "# Catalogue field reference",
        "",
        "<!-- Generated by `python tools/generate_docs.py` from sgp_infra/catalog; do not edit by hand. -->",
        "",
        "Every field a stack config file takes, generated from the pydantic models",
        "that validate it (the same source as the editor schema",
        f"[`{SCHEMA_PATH}`](../{SCHEMA_PATH})). Field names, defaults and enum",
        "spellings are the SGP API's own; fields marked *sgp-infra extension* are",
        "not in the API. Unknown fields are errors. A stack file starting with",
        "",
        "```yaml",
        f"# yaml-language-server: $schema=../{SCHEMA_PATH}",
        "```",
        "",
        "gets completion and these descriptions in editors that use the YAML",
        "language server (VS Code's YAML extension, Neovim, Helix…).",
        "",
        "## Stack keys",
        "",
        f"All keys live in the `{NAMESPACE}` config namespace (`{NAMESPACE}:<key>`).",
        "",
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    settings = classes["StackSettings"]
    for name, info in settings.model_fields.items():
        alias = info.alias or name
        prop = defs["StackSettings"]["properties"][alias]
        lines.append(f"| `{alias}` | {_type_text(prop)} | {_default_text(settings, name)} | "
                     f"{_cell(info.description)} |")
    for key, (label, entry_classes) in ENTRIES.items():
        types = " or ".join(f"[{c.__name__}](#{c.__name__.lower()})" for c in entry_classes)
        lines.append(f"| `{key}` | map of {types} | `{{}}` | The stack's {label} entries, keyed by name. |")
    for key in sorted(SECRET_KEYS):
        shape, meaning = SECRET_DOCS[key]
        lines.append(f"| `{key}` | secret: `{shape}` | — | {_cell(meaning)} Set with `pulumi config set --secret` "
                     "(in clear it is an error). Only apiKeys, modelSecrets and natsCredentials may be secrets: the "
                     "other keys are published in plain text, so a secret in them is an error too. |")
    lines += [
        "",
        "## Which entity takes which field",
        "",
        "A model entry with `vendor_configuration` is a v5 model (self-contained:",
        "`model_image` and `model_infra`); otherwise it is a v4 model built from a template.",
        "",
        "| field | " + " | ".join(ENTITIES) + " |",
        "| --- | " + " | ".join("---" for _ in ENTITIES) + " |",
    ]
    fields: list[str] = []
    for cls in ENTITIES.values():
        fields += [f.alias or n for n, f in cls.model_fields.items() if (f.alias or n) not in fields]
    for field in fields:
        cells = ["yes" if any((f.alias or n) == field for n, f in cls.model_fields.items()) else "—"
                 for cls in ENTITIES.values()]
        lines.append(f"| `{field}` | " + " | ".join(cells) + " |")
    order = [c.__name__ for c in ENTITIES.values()] + sorted(n for n in classes if n not in
                                                               {c.__name__ for c in ENTITIES.values()}
                                                               and n != "StackSettings")
    for name in order:
        cls = classes[name]
        lines += ["", f"## {name}", ""]
        doc = (cls.__doc__ or "").strip()
        if doc:
            lines += [_prose(doc), ""]
        if used.get(name):
            lines += ["Used in: " + "; ".join(used[name]) + ".", ""]
        lines += ["| field | type | default | description |", "| --- | --- | --- | --- |"]
        for field, info in cls.model_fields.items():
            alias = info.alias or field
            prop = defs[name]["properties"][alias]
            lines.append(f"| `{alias}` | {_type_text(prop)} | {_default_text(cls, field)} | "
                         f"{_cell(info.description)} |")
    return "\n".join(lines) + "\n"


def _cell(text: Optional[str]) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _prose(doc: str) -> str:
    """A class docstring as Markdown: RST double backticks become single ones."""
    paragraphs = [" ".join(line.strip() for line in block.splitlines()) for block in doc.split("\n\n")]
    text = "\n\n".join(paragraphs).replace("``", "`")
    for role in (":class:", ":func:", ":attr:"):
        text = text.replace(role, "")
    return text


__all__ = ["REFERENCE_PATH", "SCHEMA_PATH", "reference_markdown", "schema_text", "stack_schema"]
