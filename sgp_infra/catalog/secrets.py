"""Model secrets: the secret ``sgp-infra:modelSecrets`` and the ``secrets`` extension naming its entries.

A gated model needs a token (Hugging Face's ``HF_TOKEN``) that must never be
published: the catalogue is published in plain text (its ConfigMap, the
Deployments' env, ``render`` output).  So the values live in one Pulumi
secret, ``{<secret name>: {<ENV_VAR>: <value>, ...}}``, never read into the
catalogue, and a template or model only *names* the entries its container gets
(``secrets: [hf]``).  The planner turns a name into an ``envFrom`` of a
Kubernetes Secret, and the Pulumi component fills that Secret from the config.

Nothing here ever puts a value into a message: problems name config paths,
secret names and variable names only.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .errors import ConfigError, config_path
from .naming import is_dns1123_label

#: The secret config key holding every model secret's variables.
MODEL_SECRETS_KEY = "modelSecrets"
#: How to set it (the hint of its config errors).
MODEL_SECRETS_HINT = "pulumi config set --secret sgp-infra:modelSecrets '{\"<name>\": {\"<ENV_VAR>\": \"<value>\"}}'"
#: What each Kubernetes Secret's name starts with; the rest is the secret's name.
MODEL_SECRET_PREFIX = "sgp-infra-model-secret-"
#: Longest secret name: the Secret's name (prefix + name) is also a label value (at most 63).
MAX_SECRET_NAME = 63 - len(MODEL_SECRET_PREFIX)

#: An environment variable name a shell (and so every model server's launcher) can read.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def secret_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model secret, or ``None`` if it can (a short DNS-1123 label)."""
    if not is_dns1123_label(name):
        return f"{name!r} is not a valid secret name (DNS-1123 label: a-z, 0-9, '-', starting and ending " \
               "alphanumeric)"
    if len(name) > MAX_SECRET_NAME:
        return f"{name!r} has {len(name)} characters; a secret name has at most {MAX_SECRET_NAME} " \
               f"(its Secret is named {MODEL_SECRET_PREFIX}<name>)"
    return None


def model_secrets_problems(value: Any) -> list[ConfigError]:
    """Shape problems of the decrypted ``sgp-infra:modelSecrets`` value, without ever quoting a value.

    A map of secret names (see :func:`secret_name_problem`) to maps of
    environment variable names to strings.
    """
    key = MODEL_SECRETS_KEY
    if not isinstance(value, Mapping):
        return [ConfigError(config_path(key), "must be a map {<name>: {<ENV_VAR>: <value>}}; "
                                              f"set it with {MODEL_SECRETS_HINT}")]
    errors = []
    for name, variables in value.items():
        name = str(name)
        problem = secret_name_problem(name)
        if problem:
            errors.append(ConfigError(config_path(key, name), problem))
        if not isinstance(variables, Mapping) or not variables:
            errors.append(ConfigError(config_path(key, name),
                                      "must be a non-empty map of environment variables {<ENV_VAR>: <value>}"))
            continue
        for var, text in variables.items():
            var = str(var)
            if not _ENV_NAME.match(var):
                errors.append(ConfigError(config_path(key, name, var),
                                          "is not an environment variable name (letters, digits, '_'; "
                                          "not starting with a digit)"))
            if not isinstance(text, str):
                errors.append(ConfigError(config_path(key, name, var), "must be a string (quote it in the JSON)"))
    return errors
