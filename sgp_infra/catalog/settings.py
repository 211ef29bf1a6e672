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

    image: str = Field(default="ghcr.io/sgp-infra/api:0.1.0", description="The API service's image.")
    replicas: int = Field(default=2, ge=1, description="Replicas of the API Deployment.")


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
