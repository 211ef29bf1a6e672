"""The SGP entities as they are written in stack config.

Field names, defaults and enum spellings are the SGP API's own (seed 002's
``ModelTemplateRequest`` and friends, the official clients' create params for
v4 models and model groups, and the v5 ``LaunchVendorConfiguration``), so the
body of a create request pasted under a name is a valid entry.  Unknown fields
are rejected: a typo must not silently become a default.

A few fields are sgp-infra extensions and say so in their docstrings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .quantity import parse_quantity

# --- enums, spelled as the API documents them --------------------------------

EndpointType = Literal["SYNC", "ASYNC", "STREAMING", "BATCH"]
V5EndpointType = Literal["async", "sync", "streaming"]
ModelType = Literal["COMPLETION", "CHAT_COMPLETION", "AGENT", "EMBEDDING", "RERANKING", "GENERIC", "BUNDLE"]
V5ModelType = Literal["generic", "completion", "chat_completion"]
ModelVendor = Literal[
    "OPENAI", "COHERE", "GOOGLE", "VERTEX_AI", "ANTHROPIC", "LAUNCH",
    "LLMENGINE", "BEDROCK", "FIREWORKS_AI", "OTHER",
]
EndpointProtocol = Literal["SGP", "COHERE", "VLLM"]
GpuType = Literal[
    "nvidia-tesla-t4",
    "nvidia-ampere-a10",
    "nvidia-ampere-a100",
    "nvidia-ampere-a100e",
    "nvidia-hopper-h100",
    "nvidia-hopper-h100-1g20gb",
    "nvidia-hopper-h100-3g40gb",
]
GPU_TYPES: tuple[str, ...] = GpuType.__args__  # type: ignore[attr-defined]
MIG_GPU_TYPES = frozenset({"nvidia-hopper-h100-1g20gb", "nvidia-hopper-h100-3g40gb"})
ParameterType = Literal["str", "int", "float", "bool"]
TrainingDatasetSchemaType = Literal["GENERATION", "RERANKING_QUESTIONS"]
UiModelSectionType = Literal["PARTNER", "OPENSOURCE", "CUSTOM"]
RoutingStrategy = Literal["least-load", "prefix-affinity", "service"]


def _quantity(value: Any) -> Any:
    parse_quantity(value)
    return value


def _positive_quantity(value: Any) -> Any:
    if parse_quantity(value) <= 0:
        raise ValueError(f"{value!r} must be greater than zero")
    return value


Quantity = Annotated[str, AfterValidator(_quantity)]
Cpus = Annotated[Union[int, str], AfterValidator(_positive_quantity)]
EnvValue = Union[str, int, float, bool]


class _Strict(BaseModel):
    """Base for config entries: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Entity(_Strict):
    """Fields every catalogue entity accepts besides its own.

    ``id``, ``created_at`` and ``created_by_user_id`` appear in SGP responses
    (and in seed 001's example body); accepting them lets a response be pasted
    as an entry.  An explicit ``id`` replaces the derived one, which is how a
    team migrating from a hosted SGP keeps its existing ids.
    """

    name: Optional[str] = None
    account_id: Optional[str] = None
    id: Optional[str] = None
    created_at: Optional[str] = None
    created_by_user_id: Optional[str] = None


# --- sgp-infra extensions shared by templates and models ----------------------


class InferenceOptions(_Strict):
    """sgp-infra extension: how the API serves a model's inference.

    Written on a template, it is the default for the template's models; written
    on a model, each field set overrides the template's.  Unset fields take the
    defaults documented in ``docs/inference.md``.
    """

    connect_timeout_seconds: Optional[float] = Field(
        default=None, gt=0, le=600, description="Time to open a connection to a model pod (default 5).")
    read_timeout_seconds: Optional[float] = Field(
        default=None, gt=0, le=3600,
        description="Time to the answer's headers and the longest gap between stream chunks "
                    "(default 300; 60 for EMBEDDING and RERANKING models).")
    cold_start_hold_seconds: Optional[float] = Field(
        default=None, ge=0, le=3600,
        description="How long one request is held while the model wakes from zero before it gets a 503 "
                    "with Retry-After (default 50, below the official clients' 60 s timeout).")
    routing: Optional[RoutingStrategy] = Field(
        default=None,
        description="How a call picks one of the model's pods: least-load, prefix-affinity or service "
                    "(default prefix-affinity for COMPLETION and CHAT_COMPLETION models, else least-load).")
    load_bound_factor: Optional[float] = Field(
        default=None, ge=1.0, le=10.0,
        description="prefix-affinity's load bound: no pod takes more than this times the mean load "
                    "(default 1.25).")


class AsyncTaskOptions(_Strict):
    """sgp-infra extension for ASYNC endpoints: task limits and result retention.

    Like :class:`InferenceOptions`, a template sets defaults and a model
    overrides them field by field.
    """

    task_timeout_seconds: Optional[int] = Field(
        default=None, ge=1, le=86400, description="Longest time one delivery of a task may run (default 600).")
    result_ttl_seconds: Optional[int] = Field(
        default=None, ge=60, le=30 * 86400, description="How long a task's result is kept (default 86400).")
    max_deliveries: Optional[int] = Field(
        default=None, ge=1, le=100,
        description="Deliveries before a task whose worker keeps failing ends FAILURE (default 3).")


# --- model templates (seed 002) -----------------------------------------------


class ModelBundleConfiguration(_Strict):
    registry: str
    image: str
    tag: str
    command: Optional[list[str]] = None
    env: dict[str, str] = Field(default_factory=dict)
    streaming_command: Optional[list[str]] = None
    readiness_initial_delay_seconds: int = Field(default=120, ge=0)
    healthcheck_route: str = "/readyz"
    predict_route: str = "/predict"
    streaming_predict_route: str = "/generate_streaming"


class RequiredResources(_Strict):
    cpus: Cpus = 3
    memory: Quantity = "8Gi"
    storage: Quantity = "16Gi"
    gpus: int = Field(default=0, ge=0)
    gpu_type: Optional[GpuType] = None


class CreateModelEndpointConfig(RequiredResources):
    min_workers: int = Field(default=0, ge=0)
    max_workers: int = Field(default=1, ge=0)
    per_worker: int = Field(default=10, ge=1)
    endpoint_type: EndpointType = "ASYNC"
    high_priority: bool = False


class FineTuningBundleConfiguration(_Strict):
    registry: str
    image: str
    tag: str
    command: Optional[list[str]] = None
    env: dict[str, str] = Field(default_factory=dict)
    mount_location: str = "/workspace/launch_specific/config.json"
    training_dataset_schema_type: Optional[TrainingDatasetSchemaType] = None
    resources: Optional[RequiredResources] = None


class LaunchVendorConfiguration(_Strict):
    vendor: Literal["LAUNCH"] = "LAUNCH"
    bundle_config: ModelBundleConfiguration
    endpoint_config: CreateModelEndpointConfig = Field(default_factory=CreateModelEndpointConfig)
    fine_tuning_job_bundle_config: Optional[FineTuningBundleConfiguration] = None


class ParameterSchemaField(_Strict):
    name: str
    type: ParameterType
    description: str
    required: bool


class ParameterSchema(_Strict):
    parameters: list[ParameterSchemaField]


class ModelTemplate(_Entity):
    """``ModelTemplateRequest`` (seed 002)."""

    endpoint_type: EndpointType
    model_type: ModelType
    vendor_configuration: LaunchVendorConfiguration
    model_creation_parameters_schema: Optional[ParameterSchema] = None
    model_request_parameters_schema: Optional[ParameterSchema] = None
    endpoint_protocol: EndpointProtocol = "SGP"
    #: sgp-infra extensions (defaults for the template's models).
    inference: Optional[InferenceOptions] = None
    async_tasks: Optional[AsyncTaskOptions] = None


# --- v4 models (scale-gp ModelCreateParams) ----------------------------------


class BaseModelDetails(_Strict):
    alignments: Optional[int] = None
    languages: Optional[int] = None
    number_of_parameters: Optional[int] = None
    token_context_window: Optional[int] = None


class BaseModelMetadata(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    delivery_date: Optional[str] = None
    model_developer: Optional[str] = None
    model_license_url: Optional[str] = None
    model_details: Optional[BaseModelDetails] = Field(default=None, alias="modelDetails")
    ui_model_section_type: Optional[UiModelSectionType] = None


class ModelV4(_Entity):
    """A v4 model: a template plus creation parameters.

    ``min_workers``, ``max_workers`` and ``per_worker`` are sgp-infra
    extensions: per-model scaling bounds that override the template's
    ``endpoint_config`` (``pulumi config set --path
    'sgp-infra:models.<name>.min_workers' 2``); so are ``inference`` and
    ``async_tasks``, which override the template's field by field.
    """

    model_type: ModelType
    model_vendor: ModelVendor = "LAUNCH"
    model_template_id: Optional[str] = None
    model_creation_parameters: dict[str, Any] = Field(default_factory=dict)
    base_model_id: Optional[str] = None
    base_model_metadata: Optional[BaseModelMetadata] = None
    description: Optional[str] = None
    display_name: Optional[str] = None
    model_card: Optional[str] = None
    training_data_card: Optional[str] = None
    model_group_id: Optional[str] = None
    min_workers: Optional[int] = Field(default=None, ge=0)
    max_workers: Optional[int] = Field(default=None, ge=0)
    per_worker: Optional[int] = Field(default=None, ge=1)
    inference: Optional[InferenceOptions] = None
    async_tasks: Optional[AsyncTaskOptions] = None


# --- v5 models (scale-gp-beta LaunchVendorConfiguration, seed 004) -----------


class ModelImage(_Strict):
    registry: str
    repository: str
    tag: str
    command: list[str]
    env_vars: dict[str, EnvValue] = Field(default_factory=dict)
    healthcheck_route: str = "/readyz"
    predict_route: str = "/predict"
    readiness_delay: int = Field(default=120, ge=0)
    request_schema: dict[str, Any] = Field(default_factory=dict)
    response_schema: dict[str, Any] = Field(default_factory=dict)
    streaming_command: Optional[list[str]] = None
    streaming_predict_route: str = "/generate_streaming"


class ModelInfra(_Strict):
    cpus: Cpus = 3
    endpoint_type: V5EndpointType = "sync"
    gpu_type: Optional[GpuType] = None
    gpus: int = Field(default=0, ge=0)
    high_priority: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    max_workers: int = Field(default=1, ge=0)
    memory: Quantity = "8Gi"
    min_workers: int = Field(default=0, ge=0)
    per_worker: int = Field(default=10, ge=1)
    public_inference: bool = False
    storage: Quantity = "16Gi"


class V5VendorConfiguration(_Strict):
    model_image: ModelImage
    model_infra: ModelInfra = Field(default_factory=ModelInfra)


class ModelV5(_Entity):
    """A v5 model: a self-contained image plus infrastructure.

    Only the ``launch`` vendor is deployable; sgp-infra is the Launch here.
    ``on_conflict`` is accepted so a create body can be pasted; config has no
    conflicts to resolve, so it has no effect.
    """

    model_type: V5ModelType = "generic"
    model_vendor: Literal["launch"] = "launch"
    vendor_configuration: V5VendorConfiguration
    model_metadata: dict[str, Any] = Field(default_factory=dict)
    on_conflict: Optional[Literal["error", "update"]] = None
    #: sgp-infra extensions (see :class:`InferenceOptions`, :class:`AsyncTaskOptions`).
    inference: Optional[InferenceOptions] = None
    async_tasks: Optional[AsyncTaskOptions] = None


# --- model groups (seed 003, scale-gp ModelGroupCreateParams) ----------------


class ModelGroup(_Entity):
    """A named set of models.

    ``models`` (names or ids) is an sgp-infra extension: membership can be
    declared here or with a model's ``model_group_id``, or both.
    """

    description: Optional[str] = None
    models: list[str] = Field(default_factory=list)
