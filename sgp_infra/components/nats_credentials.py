"""The Kubernetes Secret of ``sgp-infra:natsCredentials``: how the API and forwarders log in to an existing NATS.

The value (``{"token": ...}`` or ``{"user": ..., "password": ...}``) comes
from the Pulumi secret and stays one: the Secret's ``stringData`` is a secret
output, never exported, never logged, never in a plain manifest.  The planner
(``plan/nats.py``) decides the Secret's metadata and the containers'
``SGP_INFRA_NATS_*`` references to it; this module only adds the values.

The decrypted value is known when the program runs, so a malformed value, or
credentials without ``sgp-infra:async.natsUrl`` (the in-cluster NATS takes
none), stop ``pulumi up`` with the config path before any resource is
registered; the messages name fields, never a value.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import pulumi

from ..catalog import Catalog, CatalogInvalid
from ..catalog.errors import NAMESPACE
from ..catalog.nats_credentials import NATS_CREDENTIALS_KEY, nats_credentials_problems
from ..plan.nats import credentials_secret, has_async
from .resources import register_secret


def configured_credentials() -> Optional[Any]:
    """The decrypted ``sgp-infra:natsCredentials`` (``None``: not set), read only to check it.

    The values handed to Kubernetes are taken again through
    ``get_secret_object``, so they are Pulumi secrets from the config API on.
    """
    return pulumi.Config(NAMESPACE).get_object(NATS_CREDENTIALS_KEY)


def check_credentials(catalog: Catalog, values: Optional[Any]) -> None:
    """``pulumi.RunError`` naming the config path when set credentials cannot be used (see module doc)."""
    if values is None:
        return
    errors = nats_credentials_problems(values, catalog.settings.async_.nats_url)
    if errors:
        raise pulumi.RunError(CatalogInvalid(errors).render())


def register_nats_credentials(name: str, catalog: Catalog, values: Optional[Mapping[str, str]], given: bool,
                              opts: pulumi.ResourceOptions) -> Optional[pulumi.CustomResource]:
    """The Secret ``sgp-infra-nats-credentials`` named ``<name>-nats-credentials``, or ``None``.

    ``None`` when the credentials are not set, or no model is ASYNC (nothing
    connects to NATS).  ``values`` were checked (:func:`check_credentials`);
    ``given``: they come from the caller (tests, programs) rather than the
    config, and are wrapped as a secret here.
    """
    if values is None or not has_async(catalog):
        return None
    source: Any = pulumi.Output.secret(values if given
                                       else pulumi.Config(NAMESPACE).get_secret_object(NATS_CREDENTIALS_KEY))
    return register_secret(f"{name}-nats-credentials", credentials_secret(catalog.settings.namespace),
                           source.apply(lambda value: {str(k): str(v) for k, v in value.items()}), opts)
