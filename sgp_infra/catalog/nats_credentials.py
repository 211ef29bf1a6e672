"""NATS credentials: the secret ``sgp-infra:natsCredentials`` for an existing NATS that requires auth.

``sgp-infra:async.natsUrl`` is published in plain text (the catalogue
ConfigMap, the forwarders' args), so it may not carry credentials.  They live
in one Pulumi secret instead, ``{"token": "..."}`` or ``{"user": "...",
"password": "..."}``; the component puts them into a Kubernetes Secret and the
API and forwarder containers read them as ``SGP_INFRA_NATS_*`` variables
(``sgp_infra/tasks/auth.py``).

The in-cluster NATS has no auth (its NetworkPolicy is what admits clients),
so the key is an error without ``natsUrl``.  Nothing here ever puts a value
into a message: problems name config paths and field names only.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from .errors import ConfigError, config_path

#: The secret config key holding the credentials of the NATS named by ``sgp-infra:async.natsUrl``.
NATS_CREDENTIALS_KEY = "natsCredentials"
#: How to set it (the hint of its config errors).
NATS_CREDENTIALS_HINT = ("pulumi config set --secret sgp-infra:natsCredentials '{\"token\": \"<token>\"}' "
                         "(or '{\"user\": \"<user>\", \"password\": \"<password>\"}')")
#: The two shapes the value may have.
SHAPES = (frozenset({"token"}), frozenset({"user", "password"}))


def credentials_without_url(present: bool, nats_url: Optional[str]) -> list[ConfigError]:
    """The key is set (``present``; its value is not needed) but no ``natsUrl`` names a NATS to use it with.

    Checked by ``validate``/``render`` from the stack file too, where the value is ciphertext.
    """
    if not present or nats_url:
        return []
    return [ConfigError(config_path(NATS_CREDENTIALS_KEY),
                        "is set, but sgp-infra:async.natsUrl is not: the in-cluster NATS has no auth and is "
                        "reached only through its NetworkPolicy; credentials are for an existing NATS named by "
                        "natsUrl (remove this key, or set natsUrl)")]


def nats_credentials_problems(value: Any, nats_url: Optional[str]) -> list[ConfigError]:
    """Why the decrypted ``sgp-infra:natsCredentials`` cannot be used, without ever quoting a value.

    ``nats_url`` is ``sgp-infra:async.natsUrl`` (``None``: the in-cluster NATS,
    which takes no credentials).
    """
    key = NATS_CREDENTIALS_KEY
    if not nats_url:
        return credentials_without_url(True, nats_url)
    if not isinstance(value, Mapping) or frozenset(str(k) for k in value) not in SHAPES:
        fields = sorted(str(k) for k in value) if isinstance(value, Mapping) else None
        found = f" (it has {', '.join(fields) or 'no fields'})" if fields is not None else ""
        return [ConfigError(config_path(key), f"must be {{\"token\": ...}} or {{\"user\": ..., \"password\": ...}}"
                                              f"{found}; set it with {NATS_CREDENTIALS_HINT}")]
    return [ConfigError(config_path(key, str(field)), "must be a non-empty string (quote it in the JSON)")
            for field, text in value.items() if not isinstance(text, str) or not text]



#: The environment variable each credentials field reaches the API and the forwarders in
#: (the Secret's keys are the field names).
ENV_VARS = {"token": "SGP_INFRA_NATS_TOKEN", "user": "SGP_INFRA_NATS_USER", "password": "SGP_INFRA_NATS_PASSWORD"}
