"""API keys, the accounts they may see, and the per-request caller.

Keys come from ``SGP_INFRA_API_KEYS``, a JSON object mapping each key to the
accounts it may see (``{"<key>": ["acme-ml", ...]}``); in a cluster the
``sgp-infra-api-keys`` Secret fills it from the Pulumi secret
``sgp-infra:apiKeys``.

Rules every route relies on (checked once per request, from its head, by
``guard.RequestGuard``; routes get the result through the :func:`caller`
dependency):

* ``x-api-key`` is required everywhere except the health routes;
* the key is compared against every configured key with
  :func:`hmac.compare_digest`, without stopping at the first match, so timing
  says nothing about which keys exist;
* ``x-selected-account-id`` narrows the caller to one of the key's accounts;
* an entity of an account the caller cannot see is *not found* (404), never
  forbidden, so its existence is not confirmed;
* keys never appear in logs, errors or ``repr``.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from ..api_keys import ApiKeysInvalid as ApiKeysInvalid  # re-exported: serve catches it
from ..api_keys import parse_api_keys as parse_keys_document
from .errors import ApiError

ENV_VAR = "SGP_INFRA_API_KEYS"

#: The key ``serve`` uses on a loopback address when ``SGP_INFRA_API_KEYS`` is
#: unset.  Public and documented; never accepted on any other address.
DEV_API_KEY = "sgp-infra-dev-key"


def parse_api_keys(text: str) -> dict[str, frozenset[str]]:
    """Parse the key → accounts mapping of ``SGP_INFRA_API_KEYS``; messages never include a key."""
    return parse_keys_document(text, ENV_VAR)


def api_keys_from_env(environ: Mapping[str, str] = os.environ) -> Optional[dict[str, frozenset[str]]]:
    """The configured keys, or ``None`` when the variable is unset."""
    text = environ.get(ENV_VAR)
    return None if text is None or not text.strip() else parse_api_keys(text)


@dataclass(frozen=True)
class Caller:
    """Who is asking: the accounts whose entities they may see."""

    accounts: frozenset[str]

    def can_see(self, account_id: str) -> bool:
        return account_id in self.accounts

    def __repr__(self) -> str:  # never the key
        return f"Caller(accounts={sorted(self.accounts)})"


class KeyRing:
    """The configured keys, matched in constant time."""

    def __init__(self, keys: Mapping[str, frozenset[str]]):
        self._keys = [(k.encode(), frozenset(a)) for k, a in keys.items()]

    def __repr__(self) -> str:
        return f"KeyRing({len(self._keys)} keys)"

    def accounts_for(self, presented: str) -> Optional[frozenset[str]]:
        candidate = presented.encode()
        found: Optional[frozenset[str]] = None
        for key, accounts in self._keys:
            # No early exit: every key is compared on every request.
            if hmac.compare_digest(candidate, key):
                found = accounts
        return found


def authenticate(keyring: KeyRing, api_key: Optional[str], selected: Optional[str]) -> Caller:
    """The caller for these header values, or an :class:`ApiError` (401/403)."""
    if not api_key:
        raise ApiError(401, "missing x-api-key header; send your sgp-infra API key in it")
    accounts = keyring.accounts_for(api_key)
    if accounts is None:
        raise ApiError(401, "the x-api-key header holds no valid API key")
    if selected:
        if selected not in accounts:
            raise ApiError(403, f"this API key may not act for account '{selected}'; "
                                "drop x-selected-account-id or pick one of the key's accounts")
        return Caller(frozenset((selected,)))
    return Caller(accounts)


#: Where ``guard.RequestGuard`` leaves the authenticated caller in the request's ASGI state (``scope["state"]``).
CALLER_KEY = "sgp_infra.caller"


def caller_in(scope: Mapping[str, Any]) -> Optional[Caller]:
    """The caller ``guard.RequestGuard`` authenticated for this request, if any."""
    state = scope.get("state")
    return state.get(CALLER_KEY) if state is not None else None


#: Declares the header in the OpenAPI document (so /docs offers it); the check
#: itself is :func:`authenticate`, which answers in the API's error shape.
API_KEY_HEADER = APIKeyHeader(name="x-api-key", auto_error=False, description="your sgp-infra API key")


async def caller(request: Request, api_key: Optional[str] = Security(API_KEY_HEADER)) -> Caller:
    """FastAPI dependency: the authenticated caller of this request.

    The app's :class:`~sgp_infra.api.guard.RequestGuard` authenticated it from
    the request head before any route ran; this only hands that caller on
    (``api_key`` is here so the OpenAPI document declares the header).  A
    route on a path the guard leaves open has no caller: a 401.
    """
    who = caller_in(request.scope)
    if who is None:
        raise ApiError(401, "missing x-api-key header; send your sgp-infra API key in it")
    return who
