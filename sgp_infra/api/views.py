"""Catalogue entities as SGP v4 and v5 response bodies.

Everything that does not change while the service runs is computed once, in
:class:`CatalogIndex`; a request only copies a precomputed dict and adds the
live fields (status, ``created_at``).

Field choices the specs leave to the implementation:

* ``created_at``: in a cluster, when the model's Deployment was created (so it
  survives every later ``pulumi up``); templates and groups take the earliest
  of their models, else the published catalogue's creation.  Outside a
  cluster, an entry's own ``created_at`` if written, else the fixed
  :data:`LOCAL_CREATED_AT` — stable, and obviously not a real time.
* ``created_by_user_id``: the entry's own, else ``sgp-infra`` with identity
  type ``service_account``: the Pulumi program made it.
* every model has exactly one deployment (its Kubernetes Deployment), so
  ``deployment_count`` is 1.
* both API versions list every model: a v5 entry appears on v4 routes with its
  model type upper-cased, a v4 entry on v5 routes with its model type lower-
  cased (``generic`` when v5 has no such type).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from typing import Any, Optional

from ..catalog import Catalog, Group, Model, Template, entity_id
from .schemas import request_schema, response_schema
from .status import ModelStatus

LOCAL_CREATED_AT = "2000-01-01T00:00:00Z"
CREATOR = "sgp-infra"
V5_MODEL_TYPES = frozenset({"generic", "completion", "chat_completion"})
V4_STATUS = {"ready": "READY", "deploying": "DEPLOYING", "failed": "FAILED",
             "deployment_timeout": "DEPLOYMENT_TIMEOUT"}


def _common(entity_id_: str, account_id: str, spec: Any) -> dict[str, Any]:
    return {
        "id": entity_id_,
        "account_id": account_id,
        "created_at": spec.created_at or LOCAL_CREATED_AT,
        "created_by_user_id": spec.created_by_user_id or CREATOR,
        "created_by_identity_type": "service_account" if not spec.created_by_user_id else "user",
    }


def template_view(t: Template) -> dict[str, Any]:
    spec = t.spec.model_dump(mode="json", exclude={"id", "name", "account_id", "created_at",
                                                   "created_by_user_id"})
    return {**_common(t.id, t.account_id, t.spec), "name": t.name, **spec}


def group_view(g: Group) -> dict[str, Any]:
    return {**_common(g.id, g.account_id, g.spec), "name": g.name, "description": g.spec.description}


def deployment_id(model: Model) -> str:
    return entity_id(model.account_id, "model_deployment", model.name)  # type: ignore[arg-type]


def model_v4_view(m: Model, groups: dict[str, Group]) -> dict[str, Any]:
    spec = m.spec
    group = groups.get(m.group) if m.group else None
    out: dict[str, Any] = {
        **_common(m.id, m.account_id, spec),
        "name": m.name,
        "model_type": m.model_type.upper(),
        "model_vendor": m.model_vendor.upper(),
        "deployment_count": 1,
        "request_schema": request_schema(m),
        "response_schema": response_schema(m),
        "supports_multi_turn": m.model_type.upper() == "CHAT_COMPLETION",
        "model_group_id": group.id if group else None,
        "model_template_id": m.template.id if m.template else None,
    }
    if m.api_version == "v4":
        out.update({
            "model_creation_parameters": dict(spec.model_creation_parameters),  # type: ignore[union-attr]
            "base_model_id": spec.base_model_id,  # type: ignore[union-attr]
            "base_model_metadata": (spec.base_model_metadata.model_dump(mode="json", by_alias=True)  # type: ignore[union-attr]
                                    if spec.base_model_metadata else None),  # type: ignore[union-attr]
            "description": spec.description,  # type: ignore[union-attr]
            "display_name": spec.display_name,  # type: ignore[union-attr]
            "model_card": spec.model_card,  # type: ignore[union-attr]
            "training_data_card": spec.training_data_card,  # type: ignore[union-attr]
        })
    return out


def _image_parts(m: Model) -> tuple[str, str, str]:
    if m.api_version == "v5":
        img = m.spec.vendor_configuration.model_image  # type: ignore[union-attr]
        return img.registry, img.repository, img.tag
    assert m.template is not None
    bc = m.template.spec.vendor_configuration.bundle_config
    return bc.registry, bc.image, bc.tag


def model_v5_view(m: Model) -> dict[str, Any]:
    registry, repository, tag = _image_parts(m)
    model_type = m.model_type.lower()
    if m.api_version == "v5":
        vc = m.spec.vendor_configuration.model_dump(mode="json")  # type: ignore[union-attr]
        metadata = dict(m.spec.model_metadata)  # type: ignore[union-attr]
    else:
        vc = {
            "model_image": {
                "registry": registry, "repository": repository, "tag": tag,
                "command": list(m.command or ()),
                "streaming_command": list(m.streaming_command) if m.streaming_command else None,
                "env_vars": dict(m.env),
                "healthcheck_route": m.healthcheck_route,
                "predict_route": m.predict_route,
                "streaming_predict_route": m.streaming_predict_route,
                "readiness_delay": m.readiness_initial_delay_seconds,
                "request_schema": request_schema(m),
                "response_schema": response_schema(m),
            },
            "model_infra": {
                "endpoint_type": m.endpoint_type.lower(), "cpus": m.cpus, "memory": m.memory,
                "storage": m.storage, "gpus": m.gpus, "gpu_type": m.gpu_type,
                "min_workers": m.min_workers, "max_workers": m.max_workers, "per_worker": m.per_worker,
                "high_priority": m.high_priority, "labels": dict(m.labels), "public_inference": False,
            },
        }
        metadata = {}
    return {
        "id": m.id,
        "object": "model",
        "account_id": m.account_id,
        "created_at": m.spec.created_at or LOCAL_CREATED_AT,
        "created_by_user_id": m.spec.created_by_user_id or CREATOR,
        "created_by_identity_type": "service_account" if not m.spec.created_by_user_id else "user",
        "name": m.name,
        "model_type": model_type if model_type in V5_MODEL_TYPES else "generic",
        "model_vendor": "launch",
        "vendor_configuration": vc,
        "model_metadata": metadata,
        "request_schema": request_schema(m),
        "response_schema": response_schema(m),
        "supports_multi_turn": model_type == "chat_completion",
        "status": "deploying",
        "status_reason": None,
    }


def deployment_view(m: Model, namespace: str) -> dict[str, Any]:
    return {
        "id": deployment_id(m),
        "account_id": m.account_id,
        "created_at": m.spec.created_at or LOCAL_CREATED_AT,
        "created_by_user_id": CREATOR,
        "created_by_identity_type": "service_account",
        "name": m.object_name,
        "status": "DEPLOYING",
        "model_instance_id": m.id,
        "model_endpoint_id": f"{namespace}/{m.object_name}",
        "model_creation_parameters": (dict(m.spec.model_creation_parameters)  # type: ignore[union-attr]
                                      if m.api_version == "v4" else None),
        "vendor_configuration": {"vendor": "LAUNCH", "min_workers": m.min_workers,
                                 "max_workers": m.max_workers, "per_worker": m.per_worker},
        "deployment_metadata": {"namespace": namespace, "object_name": m.object_name,
                                "endpoint_type": m.endpoint_type, "status_reason": None,
                                "ready_replicas": 0},
    }


@dataclass
class ModelEntry:
    model: Model
    v4: dict[str, Any]
    v5: dict[str, Any]
    deployment: dict[str, Any]
    pinned_created_at: bool  # the entry wrote its own created_at
    #: The v5 body serialised without its live fields and closing brace; list
    #: pages splice the live fields in rather than re-serialising (bench_api).
    v5_prefix: bytes = b""
    v5_live: Optional[tuple[ModelStatus, bytes]] = None

    def __post_init__(self) -> None:
        static = {k: v for k, v in self.v5.items() if k not in ("status", "status_reason", "created_at")}
        self.v5_prefix = orjson.dumps(static)[:-1]


class CatalogIndex:
    """Precomputed response bodies and lookups for one catalogue."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        ns = catalog.settings.namespace
        groups = dict(catalog.groups)
        self.templates = [template_view(t) for t in sorted(catalog.templates.values(), key=lambda t: t.name)]
        self.groups = [group_view(g) for g in sorted(groups.values(), key=lambda g: g.name)]
        self.models = [
            ModelEntry(m, model_v4_view(m, groups), model_v5_view(m), deployment_view(m, ns), bool(m.spec.created_at))
            for m in sorted(catalog.models.values(), key=lambda m: m.name)
        ]
        self._model_by_ref: dict[str, ModelEntry] = {}
        for e in self.models:
            for ref in (e.model.name, e.model.id, e.deployment["id"]):
                self._model_by_ref.setdefault(ref, e)
        self._template_by_ref = {ref: v for v in self.templates for ref in (v["name"], v["id"])}
        self._group_by_ref = {ref: v for v in self.groups for ref in (v["name"], v["id"])}
        self._group_members = {g.id: set(g.members) for g in groups.values()}
        self._template_members: dict[str, set[str]] = {}
        for e in self.models:
            if e.model.template is not None:
                self._template_members.setdefault(e.model.template.id, set()).add(e.model.name)
        self._by_accounts: dict[frozenset[str], list[ModelEntry]] = {}

    def models_of(self, accounts: frozenset[str]) -> list[ModelEntry]:
        """The models of these accounts, in name order (cached per account set)."""
        found = self._by_accounts.get(accounts)
        if found is None:
            found = [e for e in self.models if e.model.account_id in accounts]
            if len(self._by_accounts) < 1024:  # bounded: account sets come from the key file
                self._by_accounts[accounts] = found
        return found

    def model(self, ref: str) -> Optional[ModelEntry]:
        """A model by name, id or deployment id."""
        return self._model_by_ref.get(ref)

    def template(self, ref: str) -> Optional[dict[str, Any]]:
        return self._template_by_ref.get(ref)

    def group(self, ref: str) -> Optional[dict[str, Any]]:
        return self._group_by_ref.get(ref)

    def group_member_names(self, group_id: str) -> set[str]:
        return self._group_members.get(group_id, set())

    def template_member_names(self, template_id: str) -> set[str]:
        """Names of the models built from this template (computed once, not per request)."""
        return self._template_members.get(template_id, set())


def live_created_at(entry: ModelEntry, status: ModelStatus, base: dict[str, Any]) -> str:
    if entry.pinned_created_at or not status.created_at:
        return base["created_at"]
    return status.created_at
