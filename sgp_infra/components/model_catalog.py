"""``ModelCatalog``: a whole catalogue — namespace, shared objects, the model secrets' Secrets
(``ModelSecrets``), the NATS credentials Secret (``sgp-infra:natsCredentials``), one ModelEndpoint per model."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Mapping, Optional, TypedDict

import pulumi

from ..catalog import Catalog
from ..plan import Plan, plan_catalog
from .model_endpoint import ModelEndpoint, ModelEndpointArgs
from .model_secrets import ModelSecrets, ModelSecretsArgs, checked_values, configured_values
from .nats_credentials import check_credentials, configured_credentials, register_nats_credentials
from .resources import register_manifest

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:  # pragma: no cover - 3.10
    from typing_extensions import NotRequired

TYPE = "sgp-infra:index:ModelCatalog"


class ModelCatalogArgs(TypedDict):
    """Inputs of a :class:`ModelCatalog`."""

    catalog: Catalog
    """The validated catalogue (``sgp_infra.catalog.load_pulumi()``)."""
    plan: NotRequired[Plan]
    """Its plan, when the caller already made one (planning raises CatalogInvalid)."""
    model_secrets: NotRequired[Optional[Mapping[str, Mapping[str, str]]]]
    """``{name: {ENV_VAR: value}}`` for the models' ``secrets``; defaults to the secret config
    ``sgp-infra:modelSecrets``."""
    nats_credentials: NotRequired[Optional[Mapping[str, str]]]
    """``{"token": ...}`` or ``{"user": ..., "password": ...}`` for ``natsUrl``; defaults to the secret
    config ``sgp-infra:natsCredentials``."""


def shared_suffix(manifest: dict[str, Any]) -> str:
    return f"{manifest['kind'].lower()}-{manifest['metadata']['name']}"


class ModelCatalog(pulumi.ComponentResource):
    """Every model of a catalogue, deployed into the stack's namespace."""

    # Declared for type checkers only: Pulumi resolves a resource class's runtime annotations
    # (typing.get_type_hints) on every instantiation, a cost per model with no effect here.
    if TYPE_CHECKING:
        namespace: pulumi.Output[str]
        """The namespace name, available once the Namespace exists."""
        urls: pulumi.Output[dict[str, str]]
        """Model name → in-cluster URL of its Service."""
        endpoints: dict[str, ModelEndpoint]

    def __init__(self, name: str, args: ModelCatalogArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        catalog = args["catalog"]
        plan = args["plan"] if "plan" in args else plan_catalog(catalog)
        # Checked before anything is registered: a model naming a missing secret stops the program here.
        checked_values(catalog, args["model_secrets"] if "model_secrets" in args else configured_values())
        nats_given = "nats_credentials" in args
        nats_values = args["nats_credentials"] if nats_given else configured_credentials()
        check_credentials(catalog, nats_values)
        super().__init__(TYPE, name, None, opts)
        self.shared: dict[str, pulumi.CustomResource] = {}
        namespace: Optional[pulumi.CustomResource] = None
        for manifest in plan.shared:
            # Everything namespaced waits for the Namespace to exist.
            resource = register_manifest(
                f"{name}-{shared_suffix(manifest)}", manifest,
                pulumi.ResourceOptions(parent=self, depends_on=[namespace] if namespace else None))
            self.shared[shared_suffix(manifest)] = resource
            if manifest["kind"] == "Namespace":
                namespace = resource
        #: The Namespace resource, for other components created in it (e.g. ``CatalogApi``).
        self.namespace_resource = namespace
        namespace_name: str = plan.namespace
        self.namespace = (namespace.urn.apply(lambda _: namespace_name) if namespace is not None
                          else pulumi.Output.from_input(plan.namespace))
        secrets_args: ModelSecretsArgs = {"catalog": catalog}
        if "model_secrets" in args:
            secrets_args["values"] = args["model_secrets"]
        if namespace is not None:
            secrets_args["namespace"] = namespace
        #: The Secrets of ``sgp-infra:modelSecrets`` entries that models list.
        self.model_secrets = ModelSecrets(f"{name}-secrets", secrets_args, pulumi.ResourceOptions(parent=self))
        #: The Secret the API and the ASYNC forwarders read NATS credentials from (``None``: not set).
        self.nats_credentials = register_nats_credentials(
            name, catalog, nats_values, nats_given,
            pulumi.ResourceOptions(parent=self, depends_on=[namespace] if namespace else None))
        self.endpoints = {}
        for model_name, model_plan in plan.models.items():
            model = catalog.models[model_name]
            endpoint_args: ModelEndpointArgs = {"model": model, "settings": catalog.settings, "plan": model_plan}
            if namespace is not None:
                endpoint_args["namespace"] = namespace
            needs: list[pulumi.Resource] = [self.model_secrets.secrets[s] for s in model.secrets]
            if model.is_async and self.nats_credentials is not None:  # its forwarder logs in with them
                needs.append(self.nats_credentials)
            if needs:
                endpoint_args["secrets"] = needs
            self.endpoints[model_name] = ModelEndpoint(f"{name}-{model_plan.object_name}", endpoint_args,
                                                       pulumi.ResourceOptions(parent=self))
        self.urls = pulumi.Output.all(**{n: e.url for n, e in self.endpoints.items()}) if self.endpoints \
            else pulumi.Output.from_input({})
        self.register_outputs({"namespace": self.namespace, "urls": self.urls})
