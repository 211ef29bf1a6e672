"""Stack-wide settings: the scalar ``sgp-infra:*`` keys beside the catalogue maps.

Config keys are camelCase, as Pulumi projects conventionally spell them; the
catalogue entries under ``templates``/``models``/``modelGroups`` keep the SGP
API's snake_case.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .naming import is_dns1123_label

#: Keys whose values are secrets: never read into the catalogue (which is
#: published to the cluster and printed by the CLI).  They are read through
#: ``pulumi.Config.get_secret_object`` by the component that needs them.
SECRET_KEYS = frozenset({"apiKeys"})

#: The catalogue maps, validated entry by entry.
CATALOG_KEYS = ("templates", "models", "modelGroups")


class ApiSettings(BaseModel):
    """``sgp-infra:api``: how the catalogue API service is deployed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = "ghcr.io/sgp-infra/api:0.1.0"
    replicas: int = Field(default=2, ge=1)


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

    nats_url: Optional[str] = Field(default=None, alias="natsUrl")
    #: host:port of an existing NATS's monitoring endpoint, where KEDA's nats-jetstream scaler reads lag.
    monitoring_endpoint: Optional[str] = Field(default=None, alias="monitoringEndpoint")
    #: The NATS account the stream lives in (KEDA asks the monitoring endpoint for it).
    account: str = Field(default="$G", min_length=1)
    replicas: Literal[1, 3, 5] = 1
    storage: str = "10Gi"
    storage_class_name: Optional[str] = Field(default=None, alias="storageClassName")
    image: str = DEFAULT_NATS_IMAGE

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith(("nats://", "tls://", "ws://", "wss://")):
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

    account_id: str = Field(alias="accountId", min_length=1)
    namespace: str = "sgp-models"
    gpu_profile: Union[str, dict[str, Any]] = Field(default="eks", alias="gpuProfile")
    autoscaler: Literal["keda", "hpa"] = "keda"
    create_priority_classes: bool = Field(default=True, alias="createPriorityClasses")
    api: ApiSettings = Field(default_factory=ApiSettings)
    auto_deploy: bool = Field(default=False, alias="autoDeploy")
    gpu_quota: Optional[dict[str, int]] = Field(default=None, alias="gpuQuota")
    #: Where KEDA's prometheus trigger reads the API's in-flight metric.
    prometheus_url: str = Field(default="http://prometheus-operated.monitoring.svc:9090", alias="prometheusUrl")
    #: The JetStream broker of ASYNC endpoints.
    async_: AsyncSettings = Field(default_factory=AsyncSettings, alias="async")

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
