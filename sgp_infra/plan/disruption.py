"""A model's PodDisruptionBudget: node drains take one replica at a time."""

from __future__ import annotations

from typing import Any, Optional

from ..catalog import Model, StackSettings
from .labels import model_metadata, selector_labels


def pdb(model: Model, settings: StackSettings) -> Optional[dict[str, Any]]:
    """Only when more than one replica can run; with one, a budget protects nothing."""
    if model.max_workers <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": model_metadata(model, settings.namespace),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(model)}},
    }
