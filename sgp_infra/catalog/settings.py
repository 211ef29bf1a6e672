"""Stack-wide settings: the scalar ``sgp-infra:*`` keys beside the catalogue maps.

Config keys are camelCase, as Pulumi projects conventionally spell them; the
catalogue entries under ``templates``/``models``/``modelGroups`` keep the SGP
API's snake_case.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .naming import is_dns1123_label
from .quantity import parse_quantity
from .nats_credentials import NATS_CREDENTIALS_HINT, NATS_CREDENTIALS_KEY
from .secrets import MODEL_SECRETS_HINT, MODEL_SECRETS_KEY

#: Keys whose values are secrets: never read into the catalogue (which is
#: published to the cluster and printed by the CLI).  They are read through
#: ``pulumi.Config`` by the component that needs them and stay Pulumi secrets.
SECRET_KEYS = frozenset({"apiKeys", MODEL_SECRETS_KEY, NATS_CREDENTIALS_KEY})
#: How to set each secret key (the hint of its config errors).
SECRET_HINTS = {"apiKeys": "pulumi config set --secret sgp-infra:apiKeys '{\"<key>\": [\"<account>\"]}'",
                MODEL_SECRETS_KEY: MODEL_SECRETS_HINT, NATS_CREDENTIALS_KEY: NATS_CREDENTIALS_HINT}
#: Each secret key's shape and meaning, for the schema and the generated reference.
SECRET_DOCS = {
    "apiKeys": ('{"<key>": ["<account>", ...]}', "API keys and the accounts each may see."),
    MODEL_SECRETS_KEY: ('{"<name>": {"<ENV_VAR>": "<value>", ...}, ...}',
                        "Environment variables of model containers (tokens such as HF_TOKEN), by secret name; "
                        "a template or model lists the names its container gets in its secrets field "
                        "(docs/kubernetes.md)."),
    NATS_CREDENTIALS_KEY: ('{"token": "<token>"} or {"user": "<user>", "password": "<password>"}',
                           "Credentials of the existing NATS named by async.natsUrl (docs/async.md); an error "
                           "without natsUrl."),
}

#: The catalogue maps, validated entry by entry.
CATALOG_KEYS = ("templates", "models", "modelGroups")


class ApiLimits(BaseModel):
    """``sgp-infra:api.limits``: what one client may ask of one API worker process.

    The defaults are ``serve``'s defaults (its flags take them from here), and
    the planner passes every value to the pods as ``serve`` flags; docs/api.md
    has the table of which component enforces each.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, alias="maxBodyBytes",
                                description="largest request body in bytes (413 beyond it; checked against "
                                            "Content-Length before reading, counted while reading a chunked body)")
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024, alias="maxHeaderBytes",
                                  description="largest request line plus header fields in bytes (431 beyond it)")
    max_headers: int = Field(default=100, ge=8, le=10_000, alias="maxHeaders",
                             description="most header fields in one request, trailers included (431 beyond it)")
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600, alias="headerTimeoutSeconds",
                                          description="seconds a client has to send a whole request head, from "
                                                      "connecting or from the request's first byte (408)")
    # Above ingress-nginx's 60 s upstream keep-alive, so the proxy, not the API, closes a pooled connection first.
    keep_alive_timeout_seconds: int = Field(default=75, ge=1, le=3600, alias="keepAliveTimeoutSeconds",
                                            description="seconds an idle keep-alive connection stays open")
    max_connections: int = Field(default=1000, ge=1, alias="maxConnections",
                                 description="open connections per worker process (a new one beyond it gets a 503)")


#: The ``serve`` flag of each :class:`ApiLimits` field (the planner passes them to the API pods).
SERVE_LIMIT_FLAGS = {
    "max_body_bytes": "--max-body-bytes",
    "max_header_bytes": "--max-header-bytes",
    "max_headers": "--max-headers",
    "header_timeout_seconds": "--header-timeout",
    "keep_alive_timeout_seconds": "--keep-alive-timeout",
    "max_connections": "--max-connections",
}


class ApiGatewayRef(BaseModel):
    """The Gateway an HTTPRoute attaches to (``sgp-infra:api.ingress.gatewayRef``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=253, description="The Gateway's name.")
    namespace: Optional[str] = Field(default=None, min_length=1, max_length=63,
                                     description="The Gateway's namespace (default: the API's).")
    section_name: Optional[str] = Field(default=None, min_length=1, max_length=253, alias="sectionName",
                                        description="The Gateway listener to attach to (default: all).")


class ApiIngress(BaseModel):
    """``sgp-infra:api.ingress``: put the API behind the cluster's ingress.

    ``kind: httproute`` plans a Gateway API HTTPRoute attached to
    ``gatewayRef``; ``kind: ingress`` plans a ``networking.k8s.io/v1`` Ingress
    (``className``, ingress-nginx annotations for the body size, buffering and
    timeouts).  The body limit comes from ``sgp-infra:api.limits``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["httproute", "ingress"] = Field(
        description="httproute: a Gateway API HTTPRoute; ingress: a networking.k8s.io/v1 Ingress.")
    host: Optional[str] = Field(default=None, min_length=1, max_length=253,
                                pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                                description="The host name the API answers on (default: any).")
    path: str = Field(default="/", pattern=r"^/", description="The path prefix routed to the API.")
    gateway_ref: Optional[ApiGatewayRef] = Field(default=None, alias="gatewayRef",
                                                 description="The Gateway an HTTPRoute attaches to (httproute).")
    class_name: Optional[str] = Field(default=None, min_length=1, alias="className",
                                      description="The IngressClass (ingress).")
    tls_secret_name: Optional[str] = Field(default=None, min_length=1, alias="tlsSecretName",
                                           description="The TLS certificate Secret for host (ingress).")
    #: Longest gap between two reads or writes on the proxied connection (ingress-nginx). Above the
    #: API's own 300 s read timeout for generating models, so the API answers its own 504 first.
    read_timeout_seconds: int = Field(default=330, ge=1, le=86_400, alias="readTimeoutSeconds",
                                      description="Longest gap between two reads or writes on the proxied "
                                                  "connection (ingress-nginx).")
    #: Longest whole request, streams included (HTTPRoute ``timeouts.request``; ingress-nginx has none).
    request_timeout_seconds: int = Field(default=3600, ge=1, le=86_400, alias="requestTimeoutSeconds",
                                         description="Longest whole request, streams included (HTTPRoute).")
    #: More annotations on the planned object (e.g. cert-manager's); planned ones win on a clash.
    annotations: dict[str, str] = Field(default_factory=dict,
                                        description="More annotations on the planned object; planned ones win.")

    @model_validator(mode="after")
    def _fields_match_the_kind(self) -> ApiIngress:
        if self.kind == "httproute":
            if self.gateway_ref is None:
                raise ValueError("kind httproute needs gatewayRef: {name: <gateway>, namespace: <its namespace>}")
            for field, key in (("class_name", "className"), ("tls_secret_name", "tlsSecretName")):
                if getattr(self, field) is not None:
                    raise ValueError(f"{key} is for kind ingress; an HTTPRoute's TLS and class are its Gateway's")
        elif self.gateway_ref is not None:
            raise ValueError("gatewayRef is for kind httproute; an Ingress names its controller with className")
        if self.tls_secret_name is not None and self.host is None:
            raise ValueError("tlsSecretName needs host (the certificate's name)")
        return self


class ApiComputeResources(BaseModel):
    """CPU and memory of the API container (one of ``requests``/``limits``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: Optional[str] = Field(default=None, description="A CPU quantity, e.g. 500m or 2.")
    memory: Optional[str] = Field(default=None, description="A memory quantity, e.g. 512Mi.")

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        if value is None:
            return None
        parse_quantity(value)  # raises ValueError with an example of the syntax
        return str(value)


class ApiResources(BaseModel):
    """``sgp-infra:api.resources``: overrides of the API container's requests and limits.

    Unset values scale with ``workers`` (per worker: 250m CPU and 256Mi
    memory requested, 1 CPU and 512Mi memory at most).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: ApiComputeResources = Field(default_factory=ApiComputeResources,
                                          description="What the API container requests.")
    limits: ApiComputeResources = Field(default_factory=ApiComputeResources,
                                        description="The most the API container may use.")


class ApiSettings(BaseModel):
    """``sgp-infra:api``: how the catalogue API service is deployed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(default="ghcr.io/sgp-infra/api:0.1.0", description="The API service's image.")
    replicas: int = Field(default=2, ge=1, description="Replicas of the API Deployment.")
    #: uvicorn worker processes per pod (``serve --workers``); /metrics sums them.
    workers: int = Field(default=1, ge=1, le=64,
                         description="uvicorn worker processes per API pod (serve --workers); /metrics sums them.")
    resources: ApiResources = Field(default_factory=ApiResources,
                                    description="CPU and memory of the API container (default: scaled by workers).")
    limits: ApiLimits = Field(default_factory=ApiLimits, description="Client-facing limits (docs/api.md).")
    ingress: Optional[ApiIngress] = Field(default=None,
                                          description="An optional HTTPRoute or Ingress in front of the API.")


#: The in-cluster NATS server's image (JetStream; 2.11+ for the KV buckets' per-message TTL support).
DEFAULT_NATS_IMAGE = "nats:2.11.6-alpine"


class AsyncSettings(BaseModel):
    """``sgp-infra:async``: the NATS JetStream broker behind ASYNC endpoints (docs/async.md).

    Either ``natsUrl`` names an existing NATS with JetStream (nothing is
    planned for it), or an in-cluster NATS is planned when the catalogue has
    ASYNC models: ``replicas`` servers (1 for dev; 3 in production, which also
    makes the task stream and result bucket R3), each with a ``storage`` PVC.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    nats_url: Optional[str] = Field(default=None, alias="natsUrl",
                                    description="URL of an existing NATS with JetStream (nats://host:4222), without "
                                                "credentials (they go in the secret natsCredentials); unset: an "
                                                "in-cluster NATS is planned.")
    monitoring_endpoint: Optional[str] = Field(
        default=None, alias="monitoringEndpoint",
        description="host:port of the existing NATS's monitoring endpoint, where KEDA's nats-jetstream scaler "
                    "reads consumer lag.")
    account: str = Field(default="$G", min_length=1,
                         description="The NATS account the task stream lives in (KEDA asks for it).")
    replicas: Literal[1, 3, 5] = Field(default=1, description="In-cluster NATS servers (3 in production: R3).")
    storage: str = Field(default="10Gi", description="JetStream file storage per in-cluster NATS server (a PVC).")
    storage_class_name: Optional[str] = Field(default=None, alias="storageClassName",
                                              description="StorageClass of the NATS PVCs (default: the cluster's).")
    image: str = Field(default=DEFAULT_NATS_IMAGE, description="The in-cluster NATS server image.")

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        # Checked before the URL is echoed in any message: it may hold the credentials.
        if "@" in value.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("holds credentials (user:password@ or token@), which would be published in plain "
                             "text: in the catalogue ConfigMap and the ASYNC Deployments' args; put them in the "
                             f"secret sgp-infra:{NATS_CREDENTIALS_KEY} instead: {NATS_CREDENTIALS_HINT}")
        if not value.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ValueError(f"{value!r} is not a NATS URL (nats://host:4222, tls://…)")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_quantity(cls, value: str) -> str:
        from .quantity import parse_quantity

        if parse_quantity(value) <= 0:
            raise ValueError(f"{value!r} must be a positive quantity such as 10Gi")
        return value


class StackSettings(BaseModel):
    """Everything in ``sgp-infra:*`` except the catalogue maps and secrets."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    account_id: str = Field(alias="accountId", min_length=1,
                            description="The account entities belong to unless they set account_id.")
    namespace: str = Field(default="sgp-models", description="Kubernetes namespace of the models (a DNS-1123 label).")
    gpu_profile: Union[str, dict[str, Any]] = Field(
        default="eks", alias="gpuProfile",
        description="How GPU types map to node labels: eks, gke, karpenter, nfd, or a custom map "
                    "(docs/kubernetes.md).")
    autoscaler: Literal["keda", "hpa"] = Field(
        default="keda", description="keda (can scale to zero) or hpa.")
    create_priority_classes: bool = Field(
        default=True, alias="createPriorityClasses",
        description="Create the PriorityClasses high-priority models use.")
    api: ApiSettings = Field(default_factory=ApiSettings, description="How the catalogue API service is deployed.")
    auto_deploy: bool = Field(default=False, alias="autoDeploy",
                              description="Review workflow: pulumi up this stack on merge.")
    gpu_quota: Optional[dict[str, int]] = Field(
        default=None, alias="gpuQuota", description="Review workflow: advisory GPUs per type at max scale.")
    #: Where KEDA's prometheus trigger reads the API's in-flight metric.
    prometheus_url: str = Field(default="http://prometheus-operated.monitoring.svc:9090", alias="prometheusUrl",
                                description="Where KEDA's prometheus trigger reads the API's in-flight metric.")
    async_: AsyncSettings = Field(default_factory=AsyncSettings, alias="async",
                                  description="The JetStream broker of ASYNC endpoints.")

    @field_validator("namespace")
    @classmethod
    def _namespace_is_dns_label(cls, value: str) -> str:
        if not is_dns1123_label(value):
            raise ValueError(f"{value!r} is not a valid namespace name (DNS-1123 label: a-z, 0-9, '-')")
        return value

    def config_key(self, field: str) -> str:
        """The config key (camelCase alias) of a settings field."""
        info = type(self).model_fields[field]
        return info.alias or field
