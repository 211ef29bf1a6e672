"""Stable ids and Kubernetes object names for catalogue entities.

Ids are derived, never stored: a UUIDv5 of account, kind and name.  The same
catalogue therefore has the same ids on every machine and after every
``pulumi up``, which is what lets config, the API and the cluster refer to an
entity by id without a database.

Object names are how a model appears in Kubernetes.  SGP names may contain
dots, underscores and capitals (``Llama-3.1-8B``); the object name is their
lowercase DNS-1035 slug (``llama-3-1-8b``).  Two models whose slugs collide are
a config error, as is a slug that does not leave room for the suffixes and
prefixes Kubernetes and KEDA add (``keda-hpa-<name>``, pod hashes).
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

EntityKind = Literal["model_template", "model", "model_group"]

# Fixed namespace for uuid5: changing it would change every id.
_ID_NAMESPACE = uuid.UUID("6f1c7a52-3d0e-5b8e-9a51-2c4b9e0d7f13")

#: Longest object name a model may map to.  63 (a DNS label, a label value)
#: minus room for ``keda-hpa-`` and other controller-added affixes.
MAX_OBJECT_NAME = 50

#: Names the stack's own objects use; a model must not map onto them.
RESERVED_OBJECT_NAMES = frozenset({"sgp-infra-api", "sgp-infra-catalog", "sgp-infra-api-keys"})

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def entity_id(account_id: str, kind: EntityKind, name: str) -> str:
    """The stable id of an entity: a UUIDv5 of account, kind and name."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{account_id}\x1f{kind}\x1f{name}"))


def object_name(name: str) -> str:
    """The Kubernetes object name a model's objects use (may be invalid; see check)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug


def object_name_problem(name: str) -> str | None:
    """Why ``name`` cannot become a Kubernetes object name, or ``None`` if it can."""
    slug = object_name(name)
    if not slug:
        return f"name {name!r} has no letters or digits to form a Kubernetes object name"
    if not _DNS1035.match(slug):
        return (
            f"name {name!r} maps to Kubernetes object name {slug!r}, which must start with a letter "
            "(DNS-1035: Services need it)"
        )
    if len(slug) > MAX_OBJECT_NAME:
        return (
            f"name {name!r} maps to Kubernetes object name {slug!r} of {len(slug)} characters; "
            f"at most {MAX_OBJECT_NAME} leave room for the suffixes Kubernetes and KEDA add"
        )
    if slug in RESERVED_OBJECT_NAMES:
        return f"name {name!r} maps to {slug!r}, which sgp-infra's own objects use"
    return None


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.match(value))


_REGISTRY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def image_ref_problems(registry: str, repository: str, tag: str) -> dict[str, str]:
    """Problems with the parts of an image reference, keyed by the part's field.

    Checked here rather than left to the kubelet, where a bad reference
    becomes an ``InvalidImageName`` pod long after ``pulumi up`` returned.
    """
    problems = {}
    if not _REGISTRY.match(registry):
        problems["registry"] = f"{registry!r} is not a valid image registry (example: ghcr.io/acme)"
    if not _REPOSITORY.match(repository):
        problems["repository"] = f"{repository!r} is not a valid image repository (lowercase; example: vllm-server)"
    if not _TAG.match(tag):
        problems["tag"] = f"{tag!r} is not a valid image tag (example: 0.6.3)"
    return problems
