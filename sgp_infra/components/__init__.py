"""Pulumi components that deploy a planned catalogue (type tokens ``sgp-infra:index:*``).

``ModelCatalog`` deploys a whole catalogue; ``ModelEndpoint`` one model;
``ModelSecrets`` the Secrets of ``sgp-infra:modelSecrets`` that models list.
They register exactly the planner's manifests (``sgp_infra.plan``), through
:func:`register_manifest`, secrets' values added from Pulumi secret config.
"""

from .catalog_api import CatalogApi, CatalogApiArgs
from .model_catalog import ModelCatalog, ModelCatalogArgs
from .model_endpoint import ModelEndpoint, ModelEndpointArgs
from .model_secrets import ModelSecrets, ModelSecretsArgs
from .resources import register_manifest, resource_class

__all__ = ["CatalogApi", "CatalogApiArgs", "ModelCatalog", "ModelCatalogArgs", "ModelEndpoint", "ModelEndpointArgs",
           "ModelSecrets", "ModelSecretsArgs", "register_manifest", "resource_class"]
