"""JSON Schemas of a model's requests and responses, derived from its template.

SGP reports ``request_schema`` and ``response_schema`` on every model.  For a
v4 model the request schema comes from the template's
``model_request_parameters_schema`` (the parameters a caller may pass in
``model_request_parameters``) on top of the input its model type takes; the
response schema is the SGP response of that model type.  A v5 model may spell
both out in ``model_image``; otherwise the same model-type defaults apply.
"""

from __future__ import annotations

from typing import Any, Optional

from ..catalog import Model
from ..catalog.entities import ParameterSchema

_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}

_STRING_LIST = {"type": "array", "items": {"type": "string"}}

#: What each model type takes as input (the SGP v4 execute bodies).
_INPUTS: dict[str, dict[str, Any]] = {
    "COMPLETION": {"properties": {"prompt": {"type": "string"}}, "required": ["prompt"]},
    "CHAT_COMPLETION": {
        "properties": {"messages": {"type": "array", "items": {
            "type": "object",
            "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
            "required": ["role", "content"]}}},
        "required": ["messages"],
    },
    "EMBEDDING": {"properties": {"texts": _STRING_LIST}, "required": ["texts"]},
    "RERANKING": {"properties": {"query": {"type": "string"}, "chunks": _STRING_LIST},
                  "required": ["query", "chunks"]},
}

_OUTPUTS: dict[str, dict[str, Any]] = {
    "COMPLETION": {"properties": {"completion": {"type": "object", "properties": {"text": {"type": "string"}}}},
                   "required": ["completion"]},
    "CHAT_COMPLETION": {"properties": {"chat_completion": {"type": "object", "properties": {
        "message": {"type": "object", "properties": {"role": {"type": "string"}, "content": {"type": "string"}}}}}},
        "required": ["chat_completion"]},
    "EMBEDDING": {"properties": {"embeddings": {"type": "array", "items": {"type": "array",
                                                                            "items": {"type": "number"}}}},
                  "required": ["embeddings"]},
    "RERANKING": {"properties": {"chunk_scores": {"type": "array", "items": {"type": "number"}}},
                  "required": ["chunk_scores"]},
}


def parameters_schema(schema: Optional[ParameterSchema]) -> dict[str, Any]:
    """A template parameter schema as a JSON Schema object."""
    fields = schema.parameters if schema else []
    out: dict[str, Any] = {
        "type": "object",
        "properties": {f.name: {"type": _JSON_TYPES[f.type], "description": f.description} for f in fields},
        "additionalProperties": False,
    }
    required = [f.name for f in fields if f.required]
    if required:
        out["required"] = required
    return out


def request_schema(model: Model) -> dict[str, Any]:
    spec_schema = _v5_image_schema(model, "request_schema")
    if spec_schema:
        return spec_schema
    base = _INPUTS.get(model.model_type.upper(), {"properties": {}, "required": []})
    properties = dict(base["properties"])
    template = model.template
    if template is not None:
        properties["model_request_parameters"] = parameters_schema(template.spec.model_request_parameters_schema)
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if base.get("required"):
        out["required"] = list(base["required"])
    return out


def response_schema(model: Model) -> dict[str, Any]:
    spec_schema = _v5_image_schema(model, "response_schema")
    if spec_schema:
        return spec_schema
    base = _OUTPUTS.get(model.model_type.upper())
    if base is None:
        return {"type": "object"}
    return {"type": "object", **base}


def _v5_image_schema(model: Model, key: str) -> Optional[dict[str, Any]]:
    if model.api_version != "v5":
        return None
    value = getattr(model.spec.vendor_configuration.model_image, key)  # type: ignore[union-attr]
    return dict(value) if value else None
