"""``CatalogApi``: the SGP API service for a catalogue, in the stack's namespace.

Registers exactly the objects :func:`sgp_infra.plan.api.plan_api` plans
(with ``sgp-infra:api.ingress`` set, also the HTTPRoute or Ingress in front of
the API; ``sgp-infra:api.workers``, ``.limits`` and ``.resources`` shape the
Deployment), plus the API keys Secret, whose value comes from the Pulumi secret
``sgp-infra:apiKeys`` (``{"<key>": ["<account>", ...]}``) and stays a secret
output: it is never exported and never appears in a plain manifest.

Without ``sgp-infra:apiKeys`` no Secret is created and a warning says how to
set it; the pods then refuse to serve (they never fall back to a dev key off
loopback).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Mapping, Optional, TypedDict

import pulumi

from ..api_keys import ApiKeysInvalid, parse_api_keys
from ..catalog import Catalog
from ..plan.api import API_KEYS_KEY, CHECKSUM_ANNOTATION, api_keys_secret, api_url, plan_api
from .resources import child_suffix, register_manifest, register_secret

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:  # pragma: no cover - 3.10
    from typing_extensions import NotRequired

TYPE = "sgp-infra:index:CatalogApi"

SET_KEYS_HINT = ("pulumi config set --secret sgp-infra:apiKeys '{\"<key>\": [\"<account>\"]}' "
                 "(the API refuses requests until it has keys)")


def keys_document(value: Any) -> str:
    """The Secret's JSON from ``sgp-infra:apiKeys``, checked as the API will read it.

    A malformed value stops ``pulumi up`` here, naming the config key (never a
    key), rather than API pods that refuse to start until the rollout times out.
    """
    text = json.dumps(value, sort_keys=True)
    try:
        parse_api_keys(text, "sgp-infra:apiKeys")
    except ApiKeysInvalid as exc:
        raise pulumi.RunError(f"{exc}; set it with {SET_KEYS_HINT}") from None
    return text


class CatalogApiArgs(TypedDict):
    """Inputs of a :class:`CatalogApi`."""

    catalog: Catalog
    """The validated catalogue to publish and serve."""
    api_keys: NotRequired[pulumi.Input[Mapping[str, Any]]]
    """Key → accounts; defaults to the secret config ``sgp-infra:apiKeys``."""
    namespace: NotRequired[pulumi.Resource]
    """The Namespace resource, when this program creates it (adds the dependency)."""
    nats_credentials: NotRequired[Optional[pulumi.Resource]]
    """The NATS credentials Secret (``ModelCatalog.nats_credentials``) the API container reads: the
    Deployment waits for it."""
    stack: NotRequired[str]
    """The stack the catalogue comes from, named by the API's write (405) answers; defaults to
    ``pulumi.get_stack()``."""


class CatalogApi(pulumi.ComponentResource):
    """The catalogue API: Deployment, Service, catalogue ConfigMap, keys Secret, RBAC, PDB, and an
    optional HTTPRoute or Ingress."""

    # Declared for type checkers only: Pulumi resolves a resource class's runtime annotations
    # (typing.get_type_hints) on every instantiation, a cost per model with no effect here.
    if TYPE_CHECKING:
        url: pulumi.Output[str]
        """In-cluster URL of the API Service."""
        catalog_checksum: pulumi.Output[str]
        """Checksum of the published catalogue (a change rolls the pods)."""

    def __init__(self, name: str, args: CatalogApiArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__(TYPE, name, None, opts)
        catalog = args["catalog"]
        ns = catalog.settings.namespace
        depends = [args["namespace"]] if "namespace" in args else []

        keys = args["api_keys"] if "api_keys" in args else pulumi.Config("sgp-infra").get_secret_object("apiKeys")
        self.secret: Optional[pulumi.CustomResource] = None
        if keys is None:
            pulumi.log.warn(f"sgp-infra:apiKeys is not set; set it with {SET_KEYS_HINT}", self)
        else:
            self.secret = register_secret(
                f"{name}-secret", api_keys_secret(ns),
                pulumi.Output.secret(keys).apply(lambda value: {API_KEYS_KEY: keys_document(value)}),
                pulumi.ResourceOptions(parent=self, depends_on=depends))

        self.children: dict[str, pulumi.CustomResource] = {}
        stack = args["stack"] if "stack" in args else pulumi.get_stack()
        planned = plan_api(catalog, stack)  # once: it serialises the whole catalogue
        for manifest in planned:
            extra = [] if manifest["kind"] != "Deployment" else \
                [r for r in (self.secret, args.get("nats_credentials")) if r is not None]
            suffix = child_suffix(manifest)
            self.children[suffix] = register_manifest(
                f"{name}-{suffix}", manifest, pulumi.ResourceOptions(parent=self, depends_on=[*depends, *extra]))
        deployment = next(m for m in planned if m["kind"] == "Deployment")
        self.url = pulumi.Output.from_input(api_url(ns))
        self.catalog_checksum = pulumi.Output.from_input(
            deployment["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION])
        self.register_outputs({"url": self.url, "catalog_checksum": self.catalog_checksum})
