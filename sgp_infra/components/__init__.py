"""Pulumi components that deploy a planned catalogue (type tokens ``sgp-infra:index:*``)."""

from .resources import register_manifest, resource_class

__all__ = ["register_manifest", "resource_class"]
