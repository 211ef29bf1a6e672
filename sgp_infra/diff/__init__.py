"""What a catalogue change does: entities, pod restarts, GPUs, warnings.

``diff_catalogs(base, current)`` compares two validated catalogues (pure);
``to_markdown``/``to_json`` render the result; ``load_base`` reads the base
catalogue from a file or from a git ref's version of the stack file.
"""

from .base import BaseSource, BaseUnavailable, load_base
from .compare import (CatalogDiff, EntityDiff, FieldChange, GpuRow, ResolvedChange, Warning, dangling_group_members,
                      diff_catalogs)
from .render import NO_CHANGES, headline, invalid_json, invalid_markdown, to_json, to_json_data, to_markdown

__all__ = [
    "BaseSource", "BaseUnavailable", "CatalogDiff", "EntityDiff", "FieldChange", "GpuRow", "NO_CHANGES",
    "ResolvedChange", "Warning", "dangling_group_members", "diff_catalogs", "headline", "invalid_json",
    "invalid_markdown", "load_base", "to_json", "to_json_data", "to_markdown",
]
