"""NATS credentials of the API and the forwarders, from ``SGP_INFRA_NATS_*`` environment variables.

In a cluster the planner fills the variables from the Secret
``sgp-infra-nats-credentials`` (``sgp-infra:natsCredentials``); locally,
``serve`` and ``forwarder`` read the same variables.  Either
``SGP_INFRA_NATS_TOKEN``, or ``SGP_INFRA_NATS_USER`` and
``SGP_INFRA_NATS_PASSWORD``; none: no auth.  They become nats-py's public
``nats.connect`` arguments (``token=``, ``user=``/``password=``).

Values are never logged nor put into a message: errors name the variables only.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

from ..catalog.nats_credentials import ENV_VARS

TOKEN_VAR = ENV_VARS["token"]
USER_VAR = ENV_VARS["user"]
PASSWORD_VAR = ENV_VARS["password"]


class NatsAuthInvalid(ValueError):
    """The ``SGP_INFRA_NATS_*`` variables do not make one set of credentials."""


def nats_auth(environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """``nats.connect`` keyword arguments for the credentials in ``environ`` (default: ``os.environ``).

    Empty variables count as unset (an optional Secret key Kubernetes did not
    find leaves the variable out; a shell may leave it empty).
    """
    env = os.environ if environ is None else environ
    token, user, password = (env.get(var) or "" for var in (TOKEN_VAR, USER_VAR, PASSWORD_VAR))
    if token and (user or password):
        raise NatsAuthInvalid(f"set either {TOKEN_VAR}, or {USER_VAR} and {PASSWORD_VAR}, not both")
    if token:
        return {"token": token}
    if bool(user) != bool(password):
        missing = PASSWORD_VAR if user else USER_VAR
        raise NatsAuthInvalid(f"{USER_VAR} and {PASSWORD_VAR} go together: {missing} is not set")
    if user:
        return {"user": user, "password": password}
    return {}


def auth_vars(auth: Mapping[str, str]) -> str:
    """The variables the credentials came from, for messages (never their values)."""
    if "token" in auth:
        return TOKEN_VAR
    if "user" in auth:
        return f"{USER_VAR}/{PASSWORD_VAR}"
    return "none"
