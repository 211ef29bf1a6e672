"""Pulumi components that deploy a planned catalogue (type tokens ``sgp-infra:index:*``).

``ModelCatalog`` deploys a whole catalogue; ``ModelEndpoint`` one model.  Both
register exactly the planner's manifests (``sgp_infra.plan``), through
:func:`register_manifest`.
"""

from .catalog_api import CatalogApi, CatalogApiArgs
from .model_catalog import ModelCatalog, ModelCatalogArgs
from .model_endpoint import ModelEndpoint, ModelEndpointArgs
from .resources import register_manifest, resource_class

__all__ = ["CatalogApi", "CatalogApiArgs", "ModelCatalog", "ModelCatalogArgs", "ModelEndpoint", "ModelEndpointArgs",
           "register_manifest", "resource_class"]
