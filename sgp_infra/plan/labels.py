"""Labels and annotations every planned object carries.

The label keys are the contract other parts rely on (docs/architecture.md):
the API finds model pods and objects by them, the NetworkPolicy selects by
them, and KEDA's metric query names a model by its object name.  Keeping them
in one module means a key is spelled exactly once.
"""

from __future__ import annotations

import re
from typing import Mapping

from ..catalog import Model, object_name

PART_OF = "sgp-infra"
MANAGED_BY = "pulumi"

NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
PART_OF_KEY = "app.kubernetes.io/part-of"
MANAGED_BY_KEY = "app.kubernetes.io/managed-by"

MODEL_NAME = "sgp-infra.io/model-name"
MODEL_ID = "sgp-infra.io/model-id"
TEMPLATE = "sgp-infra.io/template"
#: On ASYNC models only: their pods run the forwarder sidecar, the only model pods the task broker admits.
TASK_WORKER = "sgp-infra.io/task-worker"

#: Annotations on a model's Deployment and Service recording how it is called, for people and
#: tools (``kubectl describe``); the API reads the same values from the published catalogue.
ANNOTATION_PREFIX = "sgp-infra.io/"
ROUTE_ANNOTATIONS = {
    "predict": "sgp-infra.io/predict-route",
    "streaming": "sgp-infra.io/streaming-predict-route",
    "healthcheck": "sgp-infra.io/healthcheck-route",
}
ENDPOINT_TYPE_ANNOTATION = "sgp-infra.io/endpoint-type"
PROTOCOL_ANNOTATION = "sgp-infra.io/endpoint-protocol"
SGP_NAME_ANNOTATION = "sgp-infra.io/sgp-name"

#: Pods of the catalogue API service (built in another part of the project).
API_POD_SELECTOR = {PART_OF_KEY: PART_OF, COMPONENT: "api"}
#: Every model pod of a stack.
MODEL_POD_SELECTOR = {PART_OF_KEY: PART_OF, COMPONENT: "model"}
#: The model pods that pull tasks from the broker (ASYNC models, with their forwarder sidecar).
TASK_WORKER_POD_SELECTOR = {**MODEL_POD_SELECTOR, TASK_WORKER: "true"}

#: Label keys a catalogue entry may not set through v5 ``model_infra.labels``.
RESERVED_PREFIXES = ("app.kubernetes.io/", "sgp-infra.io/")

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def stack_labels() -> dict[str, str]:
    """Labels of the stack-wide objects (namespace, policies)."""
    return {PART_OF_KEY: PART_OF, MANAGED_BY_KEY: MANAGED_BY}


def selector_labels(model: Model) -> dict[str, str]:
    """The immutable selector of a model's Deployment, Service and PDB.

    Kept small on purpose: a Deployment's selector cannot change after
    creation, so it holds only what never changes for a model.
    """
    return {INSTANCE: model.object_name, COMPONENT: "model"}


def model_labels(model: Model) -> dict[str, str]:
    """Every label of a model's objects and pods (recommended + sgp-infra + v5 labels)."""
    labels = dict(model.labels)  # v5 model_infra.labels first: ours win on clash
    labels.update({
        NAME: model.object_name,
        INSTANCE: model.object_name,
        COMPONENT: "model",
        PART_OF_KEY: PART_OF,
        MANAGED_BY_KEY: MANAGED_BY,
        MODEL_NAME: model.object_name,
        MODEL_ID: model.id,
    })
    if model.template is not None:
        labels[TEMPLATE] = label_safe(object_name(model.template.name))
    if model.is_async:
        labels[TASK_WORKER] = "true"
    return labels


def model_metadata(model: Model, namespace: str, *, annotated: bool = False) -> dict[str, object]:
    """``metadata`` of each of a model's objects: all share its name and labels.

    ``annotated`` adds the routing annotations (Deployment and Service carry
    them; informational, the API reads the published catalogue).
    """
    meta: dict[str, object] = {"name": model.object_name, "namespace": namespace, "labels": model_labels(model)}
    if annotated:
        meta["annotations"] = dict(model_annotations(model))
    return meta


def label_safe(text: str) -> str:
    """``text`` cut to a valid label value (≤ 63 chars, alphanumeric ends)."""
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", text[:63])


def label_problem(key: str, value: str, *, reserved_ok: bool = False) -> str | None:
    """Why ``key: value`` is not a valid Kubernetes label, or ``None``.

    Keys under :data:`RESERVED_PREFIXES` are a problem unless ``reserved_ok``
    (node labels a GPU profile selects on are the cluster's, not ours).
    """
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: the prefix must be a DNS subdomain (example: acme.io/team)"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return f"label key {key!r}: the name must be 1-63 alphanumerics, '-', '_' or '.', alphanumeric at both ends"
    if not reserved_ok and key.startswith(RESERVED_PREFIXES):
        return f"label key {key!r} is set by sgp-infra itself; use another prefix"
    if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
        return (f"label {key!r}: value {value!r} must be at most 63 alphanumerics, '-', '_' or '.', "
                "alphanumeric at both ends")
    return None


def model_annotations(model: Model) -> Mapping[str, str]:
    """What the API needs to call a model: routes, protocol, its SGP name."""
    annotations = {
        SGP_NAME_ANNOTATION: model.name,
        ENDPOINT_TYPE_ANNOTATION: model.endpoint_type,
        PROTOCOL_ANNOTATION: model.endpoint_protocol,
        ROUTE_ANNOTATIONS["predict"]: model.predict_route,
        ROUTE_ANNOTATIONS["healthcheck"]: model.healthcheck_route,
    }
    if model.streaming:
        annotations[ROUTE_ANNOTATIONS["streaming"]] = model.streaming_predict_route
    return annotations
