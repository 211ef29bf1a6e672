"""The catalogue: SGP entities from stack config, validated and resolved.

``load_file(path)`` and ``load_pulumi()`` return a :class:`Catalog` or raise
:class:`CatalogInvalid` listing every problem with its config path.
"""

from .build import build_catalog
from .errors import CatalogInvalid, ConfigError, config_path
from .model import AsyncTasks, Catalog, Group, Model, ModelInference, Template
from .naming import entity_id, object_name
from .settings import StackSettings
from .sources import SourceError, load_file, load_pulumi, raw_from_stack_doc, read_stack_file, stack_file

__all__ = [
    "AsyncTasks", "Catalog", "CatalogInvalid", "ConfigError", "Group", "Model", "ModelInference", "SourceError",
    "StackSettings", "Template",
    "build_catalog", "config_path", "entity_id", "load_file", "load_pulumi", "object_name",
    "raw_from_stack_doc", "read_stack_file", "stack_file",
]
