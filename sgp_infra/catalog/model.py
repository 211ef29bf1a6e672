"""The validated catalogue: what the planner, the API and the CLI consume.

A :class:`Catalog` only exists for a config that passed every check, so its
consumers never re-validate.  Each model is resolved into one flat
:class:`Model`: template and creation parameters already merged (v4) or the
self-contained spec normalised (v5), so downstream code reads ``model.gpus``
without knowing which API version the entry was written in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Union

from .entities import AsyncTaskOptions, InferenceOptions
from .entities import ModelGroup as ModelGroupSpec
from .entities import ModelTemplate as ModelTemplateSpec
from .entities import ModelV4, ModelV5
from .errors import config_path
from .settings import StackSettings


@dataclass(frozen=True)
class Template:
    name: str
    id: str
    account_id: str
    spec: ModelTemplateSpec

    @property
    def path(self) -> str:
        return config_path("templates", self.name)


#: Model types whose calls are short (embeddings, reranking): a shorter default read timeout.
SHORT_CALL_TYPES = frozenset({"EMBEDDING", "RERANKING"})
#: Model types that generate from a prompt: prefix affinity is their default routing.
PROMPT_TYPES = frozenset({"COMPLETION", "CHAT_COMPLETION"})


@dataclass(frozen=True)
class ModelInference:
    """How the API serves one model's inference: the ``inference`` extension resolved.

    Every field has its value: the model's own, else its template's, else the
    default (see :func:`resolve_inference`).
    """

    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 300.0
    cold_start_hold_seconds: float = 50.0
    routing: str = "least-load"
    load_bound_factor: float = 1.25
    pod_skip_seconds: float = 5.0


@dataclass(frozen=True)
class AsyncTasks:
    """An ASYNC model's task limits: the ``async_tasks`` extension resolved."""

    task_timeout_seconds: int = 600
    result_ttl_seconds: int = 86400
    max_deliveries: int = 3


def resolve_inference(model_type: str, *layers: Optional[InferenceOptions]) -> ModelInference:
    """The model's inference settings: later ``layers`` (the model's own) win field by field."""
    short = model_type.upper() in SHORT_CALL_TYPES
    values: dict[str, Any] = {
        "read_timeout_seconds": 60.0 if short else 300.0,
        "routing": "prefix-affinity" if model_type.upper() in PROMPT_TYPES else "least-load",
    }
    for layer in layers:
        if layer is not None:
            values.update(layer.model_dump(exclude_none=True))
    return ModelInference(**values)


def resolve_async_tasks(*layers: Optional[AsyncTaskOptions]) -> AsyncTasks:
    """The ASYNC task limits: later ``layers`` (the model's own) win field by field."""
    values: dict[str, Any] = {}
    for layer in layers:
        if layer is not None:
            values.update(layer.model_dump(exclude_none=True))
    return AsyncTasks(**values)


@dataclass(frozen=True)
class Model:
    """A deployable model with everything resolved.

    ``endpoint_type`` is upper-case (``SYNC``/``STREAMING``) whichever API
    version the entry used; ``model_type`` keeps the entry's own casing.
    """

    name: str
    id: str
    account_id: str
    api_version: Literal["v4", "v5"]
    spec: Union[ModelV4, ModelV5]
    object_name: str
    model_type: str
    model_vendor: str
    template: Optional[Template]
    group: Optional[str]
    # container
    image: str
    command: Optional[tuple[str, ...]]
    streaming_command: Optional[tuple[str, ...]]
    env: Mapping[str, str]
    healthcheck_route: str
    predict_route: str
    streaming_predict_route: str
    readiness_initial_delay_seconds: int
    # endpoint
    endpoint_type: str
    endpoint_protocol: str
    cpus: Union[int, str]
    memory: str
    storage: str
    gpus: int
    gpu_type: Optional[str]
    min_workers: int
    max_workers: int
    per_worker: int
    high_priority: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    #: sgp-infra extensions, resolved (template defaults, then the model's own).
    inference: ModelInference = field(default_factory=ModelInference)
    async_tasks: AsyncTasks = field(default_factory=AsyncTasks)
    #: Names of ``sgp-infra:modelSecrets`` entries the container gets (the model's list, else its template's).
    secrets: tuple[str, ...] = ()
    #: Where ``secrets`` was written: ``("models", name)`` or ``("templates", template)``.
    secrets_path: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return config_path("models", self.name)

    @property
    def path_parts(self) -> tuple[str, str]:
        """The model's config path as parts (``("models", name)``), to extend with a field."""
        return ("models", self.name)

    @property
    def streaming(self) -> bool:
        return self.endpoint_type == "STREAMING"

    @property
    def is_async(self) -> bool:
        """An ASYNC endpoint: its calls are queued tasks on NATS JetStream (docs/async.md)."""
        return self.endpoint_type == "ASYNC"


@dataclass(frozen=True)
class Group:
    name: str
    id: str
    account_id: str
    spec: ModelGroupSpec
    members: tuple[str, ...]  # model names

    @property
    def path(self) -> str:
        return config_path("modelGroups", self.name)


@dataclass(frozen=True)
class Catalog:
    settings: StackSettings
    templates: Mapping[str, Template]
    models: Mapping[str, Model]
    groups: Mapping[str, Group]
    #: The validated ``sgp-infra`` config it was built from (no secrets).
    #: Publishing this, not a new format, is how the API in the cluster gets
    #: the same catalogue: it rebuilds it with :func:`build_catalog`.
    source: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def stack_document(self) -> dict[str, Any]:
        """The catalogue as a stack config document (``{"config": {...}}``)."""
        return {"config": {f"sgp-infra:{k}": v for k, v in self.source.items()}}

    def gpu_totals(self) -> dict[str, tuple[int, int]]:
        """GPUs per type at min and at max scale: ``{gpu_type: (min, max)}``."""
        at_min: Counter[str] = Counter()
        at_max: Counter[str] = Counter()
        for model in self.models.values():
            if model.gpu_type and model.gpus:
                at_min[model.gpu_type] += model.gpus * model.min_workers
                at_max[model.gpu_type] += model.gpus * model.max_workers
        return {t: (at_min[t], at_max[t]) for t in sorted(at_max)}

    def summary(self) -> str:
        """The one-line summary ``validate`` prints."""
        versions = Counter(m.api_version for m in self.models.values())
        parts = [
            _count(len(self.templates), "template"),
            _count(len(self.models), "model")
            + f" ({versions['v4']} v4, {versions['v5']} v5)",
            _count(len(self.groups), "group"),
        ]
        gpus = self.gpu_totals()
        gpu_text = (
            "GPUs min/max: " + ", ".join(f"{t} {lo}/{hi}" for t, hi_lo in gpus.items() for lo, hi in [hi_lo])
            if gpus
            else "no GPUs"
        )
        return (
            f"catalogue valid (account {self.settings.account_id}, namespace {self.settings.namespace}): "
            + ", ".join(parts)
            + f"; {gpu_text}"
        )

    def model(self, name_or_id: str) -> Optional[Model]:
        """A model by name or id."""
        if name_or_id in self.models:
            return self.models[name_or_id]
        return next((m for m in self.models.values() if m.id == name_or_id), None)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
