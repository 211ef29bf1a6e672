"""Small valid catalogues to mutate in catalogue tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STACKS = sorted((ROOT / "stacks").glob("Pulumi.*.yaml"))


def template(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "endpoint_type": "SYNC",
        "model_type": "COMPLETION",
        "vendor_configuration": {
            "bundle_config": {
                "registry": "ghcr.io/acme",
                "image": "server",
                "tag": "1.0",
                "command": ["serve", "--weights", "${weights}"],
                "streaming_command": ["serve", "--stream", "--weights", "${weights}"],
                "env": {"MODEL_NAME": "${weights}", "STATIC": "yes"},
            },
            "endpoint_config": {"gpus": 1, "gpu_type": "nvidia-tesla-t4", "min_workers": 1, "max_workers": 2},
        },
        "model_creation_parameters_schema": {
            "parameters": [{"name": "weights", "type": "str", "description": "w", "required": True}]
        },
    }
    body.update(overrides)
    return body


def v4_model(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_type": "COMPLETION",
        "model_template_id": "tpl",
        "model_creation_parameters": {"weights": "s3://w/m"},
    }
    body.update(overrides)
    return body


def v5_model(**infra: Any) -> dict[str, Any]:
    model_infra = {"gpus": 1, "gpu_type": "nvidia-ampere-a10", "min_workers": 0, "max_workers": 2,
                   "endpoint_type": "sync"}
    model_infra.update(infra)
    return {
        "model_type": "generic",
        "model_vendor": "launch",
        "vendor_configuration": {
            "model_image": {"registry": "ghcr.io/acme", "repository": "reranker", "tag": "1.2", "command": ["serve"]},
            "model_infra": model_infra,
        },
    }


def raw_catalog() -> dict[str, Any]:
    """A valid ``sgp-infra`` namespace: one template, a v4 and a v5 model, a group."""
    return copy.deepcopy({
        "accountId": "acct",
        "namespace": "models",
        "templates": {"tpl": template()},
        "models": {"m4": v4_model(), "m5": v5_model()},
        "modelGroups": {"g": {"description": "group", "models": ["m4"]}},
    })
