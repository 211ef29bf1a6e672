"""``ModelSecrets``: one Kubernetes Secret per ``sgp-infra:modelSecrets`` entry that some model lists.

The values come from the Pulumi secret ``sgp-infra:modelSecrets``
(``{"<name>": {"<ENV_VAR>": "<value>"}}``) and stay Pulumi secrets: each
Secret's ``stringData`` is a secret output, never exported, never logged,
never in a plain manifest.  The planner (``plan/secrets.py``) decides the
Secrets' metadata and the model containers' ``envFrom``; this component only
adds the values.

The decrypted value is known when the program runs, so a model listing a
secret that ``modelSecrets`` lacks (or a malformed ``modelSecrets``) stops
``pulumi up`` with the config path, before any resource is registered; the
messages name secrets and variables, never a value.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Mapping, Optional, TypedDict

import pulumi

from ..catalog import Catalog, CatalogInvalid, config_path
from ..catalog.errors import NAMESPACE
from ..catalog.secrets import MODEL_SECRETS_KEY, model_secrets_problems
from ..plan.secrets import model_secret, model_secret_problems, used_secrets
from .resources import register_secret

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:  # pragma: no cover - 3.10
    from typing_extensions import NotRequired

TYPE = "sgp-infra:index:ModelSecrets"


class ModelSecretsArgs(TypedDict):
    """Inputs of a :class:`ModelSecrets`."""

    catalog: Catalog
    """The validated catalogue: which secrets its models list."""
    values: NotRequired[Optional[Mapping[str, Mapping[str, str]]]]
    """``{name: {ENV_VAR: value}}``; defaults to the secret config ``sgp-infra:modelSecrets``."""
    namespace: NotRequired[pulumi.Resource]
    """The Namespace resource, when this program creates it (adds the dependency)."""


def configured_values() -> Optional[Any]:
    """The decrypted ``sgp-infra:modelSecrets``, or ``None`` when it is not set.

    Read in the program only to check it against the catalogue (names and
    variable names) before anything is registered; the values handed to
    Kubernetes are taken again through ``get_secret_object``, so they are
    Pulumi secrets from the config API on.
    """
    return pulumi.Config(NAMESPACE).get_object(MODEL_SECRETS_KEY)


def checked_values(catalog: Catalog, values: Optional[Any]) -> Optional[Mapping[str, Mapping[str, Any]]]:
    """``values`` when every secret the models list is there and well formed; else ``pulumi.RunError``.

    The error lists every problem with its config path (as a catalogue
    error) and never a value.
    """
    if values is None and not used_secrets(catalog):
        return None
    errors = [] if values is None else model_secrets_problems(values)
    if not errors:
        names = None if values is None else {name: list(variables) for name, variables in values.items()}
        errors = model_secret_problems(catalog, names)
    if errors:
        raise pulumi.RunError(CatalogInvalid(errors).render())
    return values


class ModelSecrets(pulumi.ComponentResource):
    """The model secrets' Kubernetes Secrets; ``secrets`` maps each secret name to its Secret resource."""

    if TYPE_CHECKING:
        secrets: dict[str, pulumi.CustomResource]

    def __init__(self, name: str, args: ModelSecretsArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        catalog = args["catalog"]
        given = "values" in args
        values = checked_values(catalog, args["values"] if given else configured_values())
        super().__init__(TYPE, name, None, opts)
        depends = [args["namespace"]] if "namespace" in args else []
        used = used_secrets(catalog)
        self.secrets = {}
        if values is not None:
            for unused in sorted(set(values) - set(used)):
                pulumi.log.warn(f"{config_path(MODEL_SECRETS_KEY, unused)} is listed by no template or model; "
                                "no Secret is created for it", self)
        source: Any = pulumi.Output.secret(values if given
                                           else pulumi.Config(NAMESPACE).get_secret_object(MODEL_SECRETS_KEY))
        for secret in used:
            self.secrets[secret] = register_secret(
                f"{name}-{secret}", model_secret(secret, catalog.settings.namespace),
                source.apply(lambda all_values, s=secret: dict(all_values[s])),
                pulumi.ResourceOptions(parent=self, depends_on=depends))
        self.register_outputs({})
