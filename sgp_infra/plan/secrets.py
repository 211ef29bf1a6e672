"""Model secrets as Kubernetes objects: each named secret's Secret (without values) and the envFrom using it.

A template or model lists ``secrets: [hf]``; ``sgp-infra:modelSecrets`` (a
Pulumi secret) holds ``{"hf": {"HF_TOKEN": "..."}}``.  The planner decides
everything but the values: the Secret's name (``sgp-infra-model-secret-hf``),
namespace and labels, and the model container's ``envFrom``.  Values never
reach a plain manifest: the component adds ``stringData`` from the Pulumi
secret, and ``render`` writes no Secret at all (its Deployments reference
Secrets that ``pulumi up`` creates).

Why no checksum annotation rolls the pods when a value changes (as the
catalogue's checksum rolls the API): a digest of the values is computable only
where the values are, so the Deployment's inputs would become a Pulumi secret
and ``render`` could not plan the same Deployment; and a digest of a short
token published in a pod annotation invites guessing it.  After rotating a
token, restart the model (``kubectl rollout restart``); docs/kubernetes.md.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from ..catalog import Catalog, ConfigError, Model, config_path
from ..catalog.secrets import MODEL_SECRET_PREFIX, MODEL_SECRETS_HINT, MODEL_SECRETS_KEY
from .labels import COMPONENT, INSTANCE, MANAGED_BY, MANAGED_BY_KEY, NAME, PART_OF, PART_OF_KEY

#: ``app.kubernetes.io/name`` of every model secret (its instance label is its own name).
SECRET_APP_NAME = "sgp-infra-model-secret"


def model_secret_name(secret: str) -> str:
    """The Kubernetes Secret holding the variables of ``sgp-infra:modelSecrets.<secret>``."""
    return MODEL_SECRET_PREFIX + secret


def model_secret(secret: str, namespace: str) -> dict[str, Any]:
    """The Secret's shape without its values (``stringData`` is added by the component)."""
    name = model_secret_name(secret)
    labels = {NAME: SECRET_APP_NAME, INSTANCE: name, COMPONENT: "model-secret", PART_OF_KEY: PART_OF,
              MANAGED_BY_KEY: MANAGED_BY}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace,
                                                               "labels": labels}, "type": "Opaque"}


def env_from(model: Model) -> list[dict[str, Any]]:
    """The model container's ``envFrom``: every variable of each of its secrets, in the listed order.

    Not ``optional``: a pod whose Secret is missing waits (CreateContainerConfigError)
    rather than starting a gated model without its token.
    """
    return [{"secretRef": {"name": model_secret_name(secret)}} for secret in model.secrets]


def used_secrets(catalog: Catalog) -> dict[str, list[str]]:
    """Secret name → the models using it (sorted), for every secret some model lists."""
    out: dict[str, list[str]] = {}
    for name in sorted(catalog.models):
        for secret in catalog.models[name].secrets:
            out.setdefault(secret, []).append(name)
    return dict(sorted(out.items()))


def model_secret_problems(catalog: Catalog, variables: Optional[Mapping[str, Iterable[str]]]
                          ) -> list[ConfigError]:
    """What stops the models' secrets from working, given each configured secret's variable *names*.

    ``variables`` is ``{secret name: its variable names}`` of
    ``sgp-infra:modelSecrets`` (``None``: not set).  A listed name with no
    entry is an error at the list that names it; so is a variable a model also
    sets in its plain env (Kubernetes lets the plain value win, silently), or
    that two of a model's secrets both set (the later one would win).
    """
    available = {} if variables is None else {k: list(v) for k, v in variables.items()}
    errors: list[ConfigError] = []
    reported: set[tuple[tuple[str, ...], str]] = set()
    for name in sorted(catalog.models):
        model = catalog.models[name]
        where = model.secrets_path or model.path_parts
        seen: dict[str, str] = {}
        for index, secret in enumerate(model.secrets):
            if secret not in available:
                if (where, secret) in reported:
                    continue  # a template's list: reported once, not for each of its models
                reported.add((where, secret))
                known = ", ".join(sorted(available)) or "none"
                used_by = "" if where[0] == "models" else f" (used by model '{name}')"
                errors.append(ConfigError(
                    config_path(*where, "secrets", index),
                    f"no secret '{secret}' in {config_path(MODEL_SECRETS_KEY)}{used_by} (secrets: {known}); "
                    f"set it with {MODEL_SECRETS_HINT}"))
                continue
            for var in available[secret]:
                if var in model.env:
                    errors.append(ConfigError(
                        config_path(*where, "secrets", index),
                        f"secret '{secret}' sets {var}, which model '{name}' also sets in its plain env "
                        "(that value would win); remove one"))
                elif var in seen:
                    errors.append(ConfigError(
                        config_path(*where, "secrets", index),
                        f"secret '{secret}' sets {var}, which secret '{seen[var]}' of model '{name}' also sets; "
                        "a variable comes from one secret"))
                seen.setdefault(var, secret)
    return errors
