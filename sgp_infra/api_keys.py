"""The API keys document, ``{"<key>": ["<account>", ...]}``: one parser for both ends.

The API reads it from ``SGP_INFRA_API_KEYS`` when it starts (``api.auth``);
the Pulumi component writes it into the ``sgp-infra-api-keys`` Secret from
``sgp-infra:apiKeys`` (``components.catalog_api``) and checks it with the same
function first, so a malformed value stops ``pulumi up`` with a message naming
the config key, instead of API pods that crash-loop until the rollout times
out.  Plain Python (no FastAPI): the Pulumi program imports it.  Messages
never include a key.
"""

from __future__ import annotations

import json


class ApiKeysInvalid(ValueError):
    """The document is not a ``{"key": ["account", ...]}`` object."""


def parse_api_keys(text: str, source: str) -> dict[str, frozenset[str]]:
    """Key → accounts from the document's JSON ``text``; ``source`` names where it came from in messages."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiKeysInvalid(f"{source} is not valid JSON ({exc.msg} at position {exc.pos}); "
                             'expected {"<key>": ["<account>", ...]}') from None
    if not isinstance(raw, dict) or not raw:
        raise ApiKeysInvalid(f'{source} must be a non-empty JSON object {{"<key>": ["<account>", ...]}}')
    out: dict[str, frozenset[str]] = {}
    for n, (key, accounts) in enumerate(raw.items(), start=1):
        if not key:
            raise ApiKeysInvalid(f"{source}: key number {n} is empty")
        if isinstance(accounts, str):
            accounts = [accounts]
        if not isinstance(accounts, list) or not accounts or not all(isinstance(a, str) and a for a in accounts):
            raise ApiKeysInvalid(f"{source}: key number {n} must map to a non-empty list of account ids")
        out[key] = frozenset(accounts)
    return out
