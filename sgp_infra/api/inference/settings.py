"""Limits and timeouts of inference forwarding, with their defaults in one place.

Defaults come from the model's template (through the resolved
:class:`~sgp_infra.catalog.Model`):

* connect timeout: 5 s — a model Service either accepts at once or not at all;
* read timeout (time to the response headers, and the longest gap between two
  stream chunks): 300 s for generating models (completion, chat, generic),
  60 s for embedding and reranking models;
* cold-start wait: the model's ``readiness_initial_delay_seconds`` (v5:
  ``readiness_delay``) plus a margin (default 60 s) for scheduling the pod and
  pulling its image.

Any model's timeouts can be overridden by name with
``SGP_INFRA_MODEL_TIMEOUTS='{"<model>": {"connect": 2, "read": 30, "cold_start": 900}}'``
(or :class:`InferenceSettings` in code), and a v5 ``/v5/inference`` call may
lower its own read timeout with ``inference_configuration.timeout_seconds``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Optional

from ...catalog import Model

ENV_TIMEOUTS = "SGP_INFRA_MODEL_TIMEOUTS"
SHORT_TYPES = frozenset({"EMBEDDING", "RERANKING"})


class Timeouts(NamedTuple):
    """A model's timeouts in seconds.  A NamedTuple, not a frozen dataclass: one is
    built per request, and the dataclass's ``__init__`` cost five times as much."""

    connect: float
    read: float
    cold_start: float


@dataclass
class InferenceSettings:
    #: Largest request body accepted (413 beyond it).
    max_body_bytes: int = 16 * 1024 * 1024
    #: Largest non-streamed backend answer read (502 beyond it).
    max_response_bytes: int = 64 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout_generate: float = 300.0
    read_timeout_short: float = 60.0
    cold_start_margin: float = 60.0
    #: Retries after the first attempt, for connection refused and 503-before-any-byte.
    retries: int = 2
    backoff: float = 0.1
    #: How often a waking model's health is polled.
    wake_poll_interval: float = 0.5
    #: How long a successful answer or probe counts as "the model is up".
    ready_fresh_for: float = 15.0
    #: Seconds suggested in ``Retry-After`` when a model is unavailable.
    retry_after: int = 5
    #: Per-model overrides by model name: {"connect": s, "read": s, "cold_start": s}.
    overrides: dict[str, dict[str, float]] = field(default_factory=dict)

    def timeouts(self, model: Model) -> Timeouts:
        # On every request's path: no intermediate dict, overrides looked up once.
        read = self.read_timeout_short if model.model_type.upper() in SHORT_TYPES else self.read_timeout_generate
        connect = self.connect_timeout
        cold_start = model.readiness_initial_delay_seconds + self.cold_start_margin
        override = self.overrides.get(model.name)
        if override:
            connect = override.get("connect", connect)
            read = override.get("read", read)
            cold_start = override.get("cold_start", cold_start)
        return Timeouts(float(connect), float(read), float(cold_start))

    def in_flight_cap(self, model: Model) -> int:
        """``per_worker × max_workers``: what the autoscaler can serve at full scale."""
        return max(1, model.per_worker * model.max_workers)


class SettingsInvalid(ValueError):
    pass


def overrides_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, dict[str, float]]:
    text = environ.get(ENV_TIMEOUTS, "").strip()
    if not text:
        return {}
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsInvalid(f"{ENV_TIMEOUTS} is not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise SettingsInvalid(f'{ENV_TIMEOUTS} must be {{"<model>": {{"connect": s, "read": s, "cold_start": s}}}}')
    out: dict[str, dict[str, float]] = {}
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise SettingsInvalid(f"{ENV_TIMEOUTS}.{name} must be an object")
        for key, value in values.items():
            if key not in ("connect", "read", "cold_start"):
                raise SettingsInvalid(f"{ENV_TIMEOUTS}.{name}.{key}: use connect, read or cold_start")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise SettingsInvalid(f"{ENV_TIMEOUTS}.{name}.{key}: must be a positive number of seconds")
        out[name] = {k: float(v) for k, v in values.items()}
    return out


def settings_from_env(environ: Optional[Mapping[str, str]] = None) -> InferenceSettings:
    return InferenceSettings(overrides=overrides_from_env(os.environ if environ is None else environ))
