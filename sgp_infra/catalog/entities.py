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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from .quantity import parse_quantity
from .secrets import MAX_SECRET_NAME, secret_name_problem

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


def _secret_name(value: str) -> str:
    problem = secret_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _distinct(names: list[str]) -> list[str]:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"names {', '.join(repr(n) for n in twice)} more than once; list each secret once")
    return names


Quantity = Annotated[str, AfterValidator(_quantity)]
#: The ``secrets`` extension: names of ``sgp-infra:modelSecrets`` entries (docs/kubernetes.md).
_SECRET_NAME_SCHEMA = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": MAX_SECRET_NAME}
SecretNames = Annotated[list[Annotated[str, AfterValidator(_secret_name)]], AfterValidator(_distinct),
                        WithJsonSchema({"type": "array", "items": _SECRET_NAME_SCHEMA, "uniqueItems": True})]
_SECRETS_DOC = ("sgp-infra extension: names of sgp-infra:modelSecrets entries whose variables the model container "
                "gets (envFrom a Kubernetes Secret); set on a model, it replaces the template's list.")
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

    name: Optional[str] = Field(
        default=None, description="The entity's name; may be left out (the entry's key is the name), must equal it "
                                  "if given.")
    account_id: Optional[str] = Field(
        default=None, description="The ID of the account that owns the given entity (default: sgp-infra:accountId).")
    id: Optional[str] = Field(
        default=None, description="The unique identifier of the entity (default: derived from account, kind and "
                                  "name, the same on every run); set it to keep an id from a hosted SGP.")
    created_at: Optional[str] = Field(
        default=None, description="The date and time when the entity was created in ISO format (accepted so a "
                                  "response can be pasted; shown by the API).")
    created_by_user_id: Optional[str] = Field(
        default=None, description="The user who originally created the entity (accepted so a response can be "
                                  "pasted).")


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
        description="prefix-affinity's load bound: no pod takes more than this times the mean load, "
                    "nor is the bound below the model's per_worker (default 1.25).")
    pod_skip_seconds: Optional[float] = Field(
        default=None, ge=0, le=300,
        description="How long routing skips a pod that refused a connection, reset it before answering, "
                    "did not accept one in time or answered 503 (default 5; 0 never skips).")


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
    """The bundle configuration of the model template: the model server's image and how it is run."""

    registry: str = Field(description="Image registry, e.g. ghcr.io/acme.")
    image: str = Field(description="Image repository within the registry, e.g. vllm-server.")
    tag: str = Field(description="Image tag (quote it in YAML: \"0.6.3\").")
    command: Optional[list[str]] = Field(
        default=None, description="Container command; ${param} is replaced with the model's creation parameter.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Container environment; ${param} in values is replaced as in command.")
    streaming_command: Optional[list[str]] = Field(
        default=None, description="Command for streaming endpoints (STREAMING), if it differs from command.")
    readiness_initial_delay_seconds: int = Field(
        default=120, ge=0, description="Seconds a pod may take to load before readiness is checked.")
    healthcheck_route: str = Field(default="/readyz", description="HTTP route the readiness and liveness probes ask.")
    predict_route: str = Field(default="/predict", description="HTTP route inference requests are sent to.")
    streaming_predict_route: str = Field(
        default="/generate_streaming", description="HTTP route streamed inference requests are sent to.")


_CPUS = "CPUs per worker: a number or a Kubernetes quantity (\"500m\"); above zero."
_MEMORY = "Memory per worker, a Kubernetes quantity."
_STORAGE = "Ephemeral storage per worker, a Kubernetes quantity."
_GPUS = "GPUs per worker; above zero if and only if gpu_type is set (MIG slices take exactly 1)."
_GPU_TYPE = "GPU type per worker, placed through the stack's gpuProfile."
_MIN_WORKERS = "Fewest workers; 0 lets the model scale to zero (KEDA)."
_MAX_WORKERS = "Most workers; at least min_workers."
_PER_WORKER = ("The maximum number of concurrent requests that an individual worker can service; workers are "
               "added or removed to keep each near it, within min_workers and max_workers.")
_HIGH_PRIORITY = "Schedule the workers with a high PriorityClass."


class RequiredResources(_Strict):
    """Resources of one worker."""

    cpus: Cpus = Field(default=3, description=_CPUS)
    memory: Quantity = Field(default="8Gi", description=_MEMORY)
    storage: Quantity = Field(default="16Gi", description=_STORAGE)
    gpus: int = Field(default=0, ge=0, description=_GPUS)
    gpu_type: Optional[GpuType] = Field(default=None, description=_GPU_TYPE)


class CreateModelEndpointConfig(RequiredResources):
    """The endpoint configuration of the model template: resources and scaling of its models' workers."""

    min_workers: int = Field(default=0, ge=0, description=_MIN_WORKERS)
    max_workers: int = Field(default=1, ge=0, description=_MAX_WORKERS)
    per_worker: int = Field(default=10, ge=1, description=_PER_WORKER)
    endpoint_type: EndpointType = Field(
        default="ASYNC", description="Older spelling of the template's endpoint_type; may be left out, and must "
                                     "equal it if written.")
    high_priority: bool = Field(default=False, description=_HIGH_PRIORITY)


class FineTuningBundleConfiguration(_Strict):
    """The image that fine-tunes the template's models (validated and published; sgp-infra runs no jobs)."""

    registry: str = Field(description="Image registry.")
    image: str = Field(description="Image repository within the registry.")
    tag: str = Field(description="Image tag.")
    command: Optional[list[str]] = Field(default=None, description="Container command.")
    env: dict[str, str] = Field(default_factory=dict, description="Container environment.")
    mount_location: str = Field(
        default="/workspace/launch_specific/config.json",
        description="The filesystem location where the fine tuning job's configuration will be available when it "
                    "is started.")
    training_dataset_schema_type: Optional[TrainingDatasetSchemaType] = Field(
        default=None, description="Optionally set required training and validation dataset schema.")
    resources: Optional[RequiredResources] = Field(default=None, description="Resources of the fine-tuning job.")


class LaunchVendorConfiguration(_Strict):
    """Configuration for launching a model using the Launch service (here: sgp-infra on Kubernetes)."""

    vendor: Literal["LAUNCH"] = Field(default="LAUNCH", description="The vendor of the model template.")
    bundle_config: ModelBundleConfiguration = Field(description="The bundle configuration of the model template.")
    endpoint_config: CreateModelEndpointConfig = Field(
        default_factory=CreateModelEndpointConfig, description="The endpoint configuration of the model template.")
    fine_tuning_job_bundle_config: Optional[FineTuningBundleConfiguration] = Field(
        default=None, description="The bundle configuration of the template's fine-tuning job.")


class ParameterSchemaField(_Strict):
    """One parameter a model (creation) or a request (execution) may set."""

    name: str = Field(description="The parameter's name (${name} in the bundle's command and env).")
    type: ParameterType = Field(description="Its type: str, int, float or bool.")
    description: str = Field(description="What it is for.")
    required: bool = Field(description="Whether every model (or request) must set it.")


class ParameterSchema(_Strict):
    """The field names and types of available parameter fields."""

    parameters: list[ParameterSchemaField] = Field(description="The declared parameters.")


class ModelTemplate(_Entity):
    """``ModelTemplateRequest`` (seed 002)."""

    endpoint_type: EndpointType = Field(
        description="The type of model endpoint: SYNC and STREAMING are deployable; ASYNC and BATCH are not yet.")
    model_type: ModelType = Field(description="The type of model its models are (they must say the same).")
    vendor_configuration: LaunchVendorConfiguration = Field(
        description="How the template's models are launched: bundle (image), endpoint (resources, scaling).")
    model_creation_parameters_schema: Optional[ParameterSchema] = Field(
        default=None, description="The field names and types of available parameter fields which may be specified "
                                  "during model creation.")
    model_request_parameters_schema: Optional[ParameterSchema] = Field(
        default=None, description="The field names and types of available parameter fields which may be specified "
                                  "in a model execution API's model_request_parameters field.")
    endpoint_protocol: EndpointProtocol = Field(
        default="SGP", description="The name of the calling convention expected by the Launch model endpoint.")
    #: sgp-infra extensions (defaults for the template's models).
    inference: Optional[InferenceOptions] = Field(
        default=None, description="sgp-infra extension: inference defaults for the template's models.")
    async_tasks: Optional[AsyncTaskOptions] = Field(
        default=None, description="sgp-infra extension: ASYNC task defaults for the template's models.")
    secrets: Optional[SecretNames] = Field(
        default=None, description="sgp-infra extension: names of sgp-infra:modelSecrets entries whose variables "
                                  "the template's models' containers get, unless a model lists its own.")


# --- v4 models (scale-gp ModelCreateParams) ----------------------------------


class BaseModelDetails(_Strict):
    """Facts about the base model, shown by the API."""

    alignments: Optional[int] = Field(default=None, description="Number of alignments.")
    languages: Optional[int] = Field(default=None, description="Number of languages.")
    number_of_parameters: Optional[int] = Field(default=None, description="Number of parameters.")
    token_context_window: Optional[int] = Field(default=None, description="Context window, in tokens.")


class BaseModelMetadata(_Strict):
    """Metadata of the base model, shown by the API."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    delivery_date: Optional[str] = Field(default=None, description="When the model was delivered.")
    model_developer: Optional[str] = Field(default=None, description="Who developed the model.")
    model_license_url: Optional[str] = Field(default=None, description="Where its license is.")
    model_details: Optional[BaseModelDetails] = Field(default=None, alias="modelDetails",
                                                      description="Facts about the model.")
    ui_model_section_type: Optional[UiModelSectionType] = Field(
        default=None, description="The SGP UI section the model is listed in.")


class ModelV4(_Entity):
    """A v4 model: a template plus creation parameters.

    ``min_workers``, ``max_workers`` and ``per_worker`` are sgp-infra
    extensions: per-model scaling bounds that override the template's
    ``endpoint_config`` (``pulumi config set --path
    'sgp-infra:models.<name>.min_workers' 2``); so are ``inference`` and
    ``async_tasks``, which override the template's field by field, and
    ``secrets``, which replaces the template's list.
    """

    model_type: ModelType = Field(description="The type of model; must be the template's model_type.")
    model_vendor: ModelVendor = Field(
        default="LAUNCH", description="The model vendor; a model built from a template is deployed by LAUNCH.")
    model_template_id: Optional[str] = Field(
        default=None, description="The template (its name or id) the model is created from; required.")
    model_creation_parameters: dict[str, Any] = Field(
        default_factory=dict, description="Values of the template's model_creation_parameters_schema parameters.")
    base_model_id: Optional[str] = Field(default=None, description="The id of the model this one is based on.")
    base_model_metadata: Optional[BaseModelMetadata] = Field(
        default=None, description="Metadata of the base model, shown by the API.")
    description: Optional[str] = Field(default=None, description="What the model is for.")
    display_name: Optional[str] = Field(default=None, description="Name shown in UIs.")
    model_card: Optional[str] = Field(default=None, description="The model card.")
    training_data_card: Optional[str] = Field(default=None, description="The training data card.")
    model_group_id: Optional[str] = Field(
        default=None, description="The model group (its name or id) the model belongs to.")
    min_workers: Optional[int] = Field(
        default=None, ge=0, description="sgp-infra extension: overrides the template's endpoint_config.min_workers.")
    max_workers: Optional[int] = Field(
        default=None, ge=0, description="sgp-infra extension: overrides the template's endpoint_config.max_workers.")
    per_worker: Optional[int] = Field(
        default=None, ge=1, description="sgp-infra extension: overrides the template's endpoint_config.per_worker.")
    inference: Optional[InferenceOptions] = Field(
        default=None, description="sgp-infra extension: overrides the template's inference options field by field.")
    async_tasks: Optional[AsyncTaskOptions] = Field(
        default=None, description="sgp-infra extension: overrides the template's async_tasks field by field.")
    secrets: Optional[SecretNames] = Field(default=None, description=_SECRETS_DOC)


# --- v5 models (scale-gp-beta LaunchVendorConfiguration, seed 004) -----------


class ModelImage(_Strict):
    """The model server's image and how it is run (v5)."""

    registry: str = Field(description="Image registry, e.g. ghcr.io/acme.")
    repository: str = Field(description="Image repository within the registry, e.g. reranker.")
    tag: str = Field(description="Image tag (quote it in YAML).")
    command: list[str] = Field(description="Container command.")
    env_vars: dict[str, EnvValue] = Field(default_factory=dict, description="Container environment.")
    healthcheck_route: str = Field(default="/readyz", description="HTTP route the readiness and liveness probes ask.")
    predict_route: str = Field(default="/predict", description="HTTP route inference requests are sent to.")
    readiness_delay: int = Field(
        default=120, ge=0, description="Seconds a pod may take to load before readiness is checked.")
    request_schema: dict[str, Any] = Field(
        default_factory=dict, description="JSON Schema of inference args; /v5/inference checks args against it.")
    response_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema of the model's answers.")
    streaming_command: Optional[list[str]] = Field(
        default=None, description="Command for streaming endpoints, if it differs from command.")
    streaming_predict_route: str = Field(
        default="/generate_streaming", description="HTTP route streamed inference requests are sent to.")


class ModelInfra(_Strict):
    """Resources and scaling of the model's workers (v5)."""

    cpus: Cpus = Field(default=3, description=_CPUS)
    endpoint_type: V5EndpointType = Field(
        default="sync", description="The type of model endpoint: sync and streaming are deployable; async not yet.")
    gpu_type: Optional[GpuType] = Field(default=None, description=_GPU_TYPE)
    gpus: int = Field(default=0, ge=0, description=_GPUS)
    high_priority: bool = Field(default=False, description=_HIGH_PRIORITY)
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to the model's pods.")
    max_workers: int = Field(default=1, ge=0, description=_MAX_WORKERS)
    memory: Quantity = Field(default="8Gi", description=_MEMORY)
    min_workers: int = Field(default=0, ge=0, description=_MIN_WORKERS)
    per_worker: int = Field(default=10, ge=1, description=_PER_WORKER)
    public_inference: bool = Field(default=False, description="Accepted for API compatibility; no effect here.")
    storage: Quantity = Field(default="16Gi", description=_STORAGE)


class V5VendorConfiguration(_Strict):
    """A v5 model's image and infrastructure (LaunchVendorConfiguration)."""

    model_image: ModelImage = Field(description="The model server's image and routes.")
    model_infra: ModelInfra = Field(default_factory=ModelInfra, description="Resources and scaling.")


class ModelV5(_Entity):
    """A v5 model: a self-contained image plus infrastructure.

    Only the ``launch`` vendor is deployable; sgp-infra is the Launch here.
    ``on_conflict`` is accepted so a create body can be pasted; config has no
    conflicts to resolve, so it has no effect.
    """

    model_type: V5ModelType = Field(default="generic", description="The type of model.")
    model_vendor: Literal["launch"] = Field(default="launch", description="The model vendor; only launch deploys.")
    vendor_configuration: V5VendorConfiguration = Field(description="The model's image and infrastructure.")
    model_metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form metadata, shown by the API.")
    on_conflict: Optional[Literal["error", "update"]] = Field(
        default=None, description="Accepted so a create body can be pasted; no effect in config.")
    #: sgp-infra extensions (see :class:`InferenceOptions`, :class:`AsyncTaskOptions`).
    inference: Optional[InferenceOptions] = Field(
        default=None, description="sgp-infra extension: how the API serves the model's inference.")
    async_tasks: Optional[AsyncTaskOptions] = Field(
        default=None, description="sgp-infra extension: ASYNC task limits and result retention.")
    secrets: Optional[SecretNames] = Field(
        default=None, description="sgp-infra extension: names of sgp-infra:modelSecrets entries whose variables "
                                  "the model container gets (envFrom a Kubernetes Secret).")


# --- model groups (seed 003, scale-gp ModelGroupCreateParams) ----------------


class ModelGroup(_Entity):
    """A named set of models.

    ``models`` (names or ids) is an sgp-infra extension: membership can be
    declared here or with a model's ``model_group_id``, or both.
    """

    description: Optional[str] = Field(default=None, description="What the group is.")
    models: list[str] = Field(
        default_factory=list, description="sgp-infra extension: member models, by name or id (a model may also "
                                          "join with its model_group_id).")
