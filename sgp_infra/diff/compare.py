"""Compare two validated catalogues: what a reviewer needs to judge a change.

A pull request edits stack config; what matters to the reviewer is what the
edit *does*: which pods restart, how many GPUs the stack may claim, whether a
high-priority model can now scale to zero.  This module answers that as data
(:class:`CatalogDiff`); :mod:`.render` turns it into Markdown or JSON.

Two views of each model are compared:

* the entry as written (``spec``), so the reviewer sees the edited fields with
  their config paths;
* the resolved :class:`~sgp_infra.catalog.Model`, so a template edit shows up
  on every model built from it and each change is classified by its effect
  on the running pods (restart, scaling only, catalogue metadata only).

Whether a model's pods restart is decided by the planner, the only code that
knows what a manifest contains: the pods are replaced exactly when the planned
Deployment's pod template (or its name/namespace) differs.  The field
classification says *why*; when a restart has no field to blame (a GPU
profile or namespace setting changed), the model is listed with a
``pod template`` change.  If a side cannot be planned, the classification of
the fields alone decides.

Everything here is pure: no files, no git, no Pulumi.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Literal, Mapping, Optional

from ..catalog import Catalog, CatalogInvalid, Model, config_path
from ..plan import Plan, plan_catalog
from ..plan.api import plan_api

Effect = Literal["restart", "scale", "none"]
Status = Literal["added", "removed", "changed"]

#: Resolved model fields that end up in the Deployment's pod template: changing
#: one makes Kubernetes replace every pod of the model (a rolling restart).
RESTART_FIELDS = (
    "image", "command", "streaming_command", "env", "endpoint_type",
    "cpus", "memory", "storage", "gpus", "gpu_type",
    "healthcheck_route", "readiness_initial_delay_seconds", "high_priority", "labels",
    "template", "id", "account_id",
)
#: Resolved fields that only change the autoscaler: pods keep running.
SCALE_FIELDS = ("min_workers", "max_workers", "per_worker")
#: Resolved fields read by the API service only (routing, catalogue reads).
OTHER_FIELDS = (
    "api_version", "model_type", "model_vendor", "endpoint_protocol",
    "predict_route", "streaming_predict_route", "group", "async_tasks",
)

#: Settings whose change touches every model, with what it does.
SETTINGS_EFFECTS: Mapping[str, str] = {
    "namespace": "every model and the API move to another namespace: all are recreated there",
    "gpuProfile": "GPU node selectors change: every GPU model restarts",
    "autoscaler": "every model's autoscaler object is replaced (pods keep running)",
    "createPriorityClasses": "high-priority models change priority class: they restart",
    "api": "the API service's pods restart",
    "async": "the ASYNC task broker changes: the in-cluster NATS is updated (servers restart one at a time) "
             "or replaced, and the API and forwarders reconnect",
}


@dataclass(frozen=True)
class FieldChange:
    """One field that differs; ``None`` on a side means it is unset there."""

    field: str  # dotted, relative to the entity (``model_infra.max_workers``)
    path: str  # the config path (``sgp-infra:models.x.vendor_configuration...``)
    before: Any
    after: Any


@dataclass(frozen=True)
class ResolvedChange:
    """A resolved model field that differs, and what that does to the pods."""

    field: str
    before: Any
    after: Any
    effect: Effect


@dataclass(frozen=True)
class EntityDiff:
    """A template, model or group that was added, removed or changed."""

    kind: Literal["template", "model", "group"]
    name: str
    status: Status
    #: Edited fields of the entry (empty for added/removed and for a model
    #: changed only through its template).
    fields: tuple[FieldChange, ...] = ()
    #: Models only: resolved fields that differ, each with its effect.
    resolved: tuple[ResolvedChange, ...] = ()
    #: Models: the pods restart (or are created/deleted).  Templates: at least
    #: one model built from it restarts.
    restarts: bool = False
    #: Models changed only because their template changed: its name.
    via_template: Optional[str] = None
    #: Templates: the models whose pods restart because of this change.
    rolls: tuple[str, ...] = ()
    #: Groups: members joined and left.
    members_added: tuple[str, ...] = ()
    members_removed: tuple[str, ...] = ()
    #: Added/removed models: a one-line description of what is (un)deployed.
    facts: Optional[str] = None

    @property
    def restart_fields(self) -> tuple[str, ...]:
        return _unique(c.field.split(".")[0] for c in self.resolved if c.effect == "restart")

    @property
    def scale_fields(self) -> tuple[str, ...]:
        return _unique(c.field for c in self.resolved if c.effect == "scale")


@dataclass(frozen=True)
class GpuRow:
    """GPUs of one type the stack claims at min and at max scale."""

    gpu_type: str
    min_before: int
    min_after: int
    max_before: int
    max_after: int
    quota: Optional[int] = None

    @property
    def changed(self) -> bool:
        return (self.min_before, self.max_before) != (self.min_after, self.max_after)


@dataclass(frozen=True)
class Warning:
    code: str
    message: str


@dataclass(frozen=True)
class CatalogDiff:
    templates: tuple[EntityDiff, ...] = ()
    models: tuple[EntityDiff, ...] = ()
    groups: tuple[EntityDiff, ...] = ()
    settings: tuple[FieldChange, ...] = ()
    gpus: tuple[GpuRow, ...] = ()
    warnings: tuple[Warning, ...] = ()
    #: False when there was no base catalogue (new stack file, invalid base).
    has_base: bool = True
    #: The API's pods roll: its planned pod template changed (it carries a
    #: checksum of the published catalogue, so most catalogue edits roll it).
    api_restarts: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.templates or self.models or self.groups or self.settings)

    @property
    def restarting_models(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.models if d.status == "changed" and d.restarts)


# -- the comparison -------------------------------------------------------------


def diff_catalogs(base: Optional[Catalog], current: Catalog,
                  base_problem: Optional[str] = None, *, current_plan: Optional[Plan] = None) -> CatalogDiff:
    """What changes from ``base`` to ``current``.

    ``base`` is ``None`` when there is nothing to compare with (the stack file
    is new at this ref, or the base catalogue is invalid; ``base_problem`` says
    which, and becomes a warning): everything in ``current`` is then "added".
    ``current_plan``, when the caller already planned ``current``, saves
    planning it again.
    """
    b_templates = base.templates if base else {}
    b_models = base.models if base else {}
    b_groups = base.groups if base else {}

    pods_before = pod_templates(base) if base else {}
    pods_after = pod_templates(current, current_plan)
    models_list = list(_model_diffs(b_models, current.models, pods_before, pods_after))
    rolls: dict[str, list[str]] = {}
    for i, d in enumerate(models_list):
        if d.status == "changed" and d.restarts:
            tpl = current.models[d.name].template
            if tpl is not None and _template_restart_changed(b_templates.get(tpl.name), tpl.spec):
                rolls.setdefault(tpl.name, []).append(d.name)
                models_list[i] = replace(d, via_template=tpl.name)
    models = tuple(models_list)
    templates = tuple(_template_diffs(b_templates, current.templates, rolls))
    groups = tuple(_group_diffs(b_groups, current.groups))
    settings = tuple(_field_changes(
        base.settings.model_dump(mode="json", by_alias=True, exclude_none=True) if base else {},
        current.settings.model_dump(mode="json", by_alias=True, exclude_none=True) if base else {},
        lambda parts: config_path(*parts),
    ))
    gpus = _gpu_rows(base, current)
    warnings = _warnings(base, current, models, templates, settings, gpus, base_problem)
    return CatalogDiff(templates=templates, models=models, groups=groups, settings=settings,
                       gpus=gpus, warnings=warnings, has_base=base is not None,
                       api_restarts=base is not None and _api_pod(base) != _api_pod(current))


def _api_pod(catalog: Catalog) -> Any:
    """The API Deployment's namespace and pod template as planned."""
    for manifest in plan_api(catalog):
        if manifest.get("kind") == "Deployment":
            return manifest["metadata"].get("namespace"), manifest["spec"]["template"]
    return None


def pod_templates(catalog: Catalog, plan: Optional[Plan] = None) -> Optional[dict[str, Any]]:
    """Per model, what replacing its pods depends on: Deployment namespace, name, pod template.

    ``None`` when the catalogue cannot be planned (e.g. a GPU type its
    profile cannot place).  ``plan``, if given, is the catalogue's plan.
    """
    if plan is None:
        try:
            plan = plan_catalog(catalog)
        except CatalogInvalid:
            return None
    out: dict[str, Any] = {}
    for name, planned in plan.models.items():
        dep = next((m for m in planned.manifests if m.get("kind") == "Deployment"), None)
        if dep is not None:
            meta = dep.get("metadata", {})
            out[name] = (meta.get("namespace"), meta.get("name"), dep.get("spec", {}).get("template"))
    return out


def _model_diffs(before: Mapping[str, Model], after: Mapping[str, Model],
                 pods_before: Optional[Mapping[str, Any]] = None,
                 pods_after: Optional[Mapping[str, Any]] = None) -> Iterable[EntityDiff]:
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old is None:
            assert new is not None
            yield EntityDiff("model", name, "added", restarts=True, facts=model_facts(new))
        elif new is None:
            yield EntityDiff("model", name, "removed", restarts=True, facts=model_facts(old))
        else:
            fields = tuple(_field_changes(_dump(old.spec), _dump(new.spec),
                                          lambda parts, n=name: config_path("models", n, *parts)))
            resolved = list(_resolved_changes(old, new))
            restarts = any(c.effect == "restart" for c in resolved)
            if pods_before is not None and pods_after is not None and name in pods_before and name in pods_after:
                planned_restart = pods_before[name] != pods_after[name]
                if planned_restart and not restarts:
                    resolved.append(ResolvedChange("pod template", None, None, "restart"))
                elif restarts and not planned_restart:
                    resolved = [replace(c, effect="none") if c.effect == "restart" else c for c in resolved]
                restarts = planned_restart
            if not fields and not resolved:
                continue
            via = new.template.name if (not fields and new.template is not None) else None
            yield EntityDiff("model", name, "changed", fields=fields, resolved=tuple(resolved),
                             restarts=restarts, via_template=via)


def _template_diffs(before: Mapping[str, Any], after: Mapping[str, Any],
                    rolls: Mapping[str, list[str]]) -> Iterable[EntityDiff]:
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old is None:
            yield EntityDiff("template", name, "added")
        elif new is None:
            yield EntityDiff("template", name, "removed")
        else:
            fields = tuple(_field_changes(_dump(old.spec), _dump(new.spec),
                                          lambda parts, n=name: config_path("templates", n, *parts)))
            if fields or old.id != new.id:
                rolled = tuple(sorted(rolls.get(name, ())))
                yield EntityDiff("template", name, "changed", fields=fields, restarts=bool(rolled), rolls=rolled)


def _group_diffs(before: Mapping[str, Any], after: Mapping[str, Any]) -> Iterable[EntityDiff]:
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old is None:
            yield EntityDiff("group", name, "added", members_added=tuple(sorted(after[name].members)))
        elif new is None:
            yield EntityDiff("group", name, "removed", members_removed=tuple(sorted(old.members)))
        else:
            fields = tuple(_field_changes(_dump(old.spec), _dump(new.spec),
                                          lambda parts, n=name: config_path("modelGroups", n, *parts)))
            joined = tuple(sorted(set(new.members) - set(old.members)))
            left = tuple(sorted(set(old.members) - set(new.members)))
            if fields or joined or left:
                yield EntityDiff("group", name, "changed", fields=fields,
                                 members_added=joined, members_removed=left)


def _template_restart_changed(old: Any, new_spec: Any) -> bool:
    """Did the template's deployable part change (vs. only its descriptions)?"""
    if old is None:
        return False
    pick = lambda s: (s.endpoint_type, _dump(s.vendor_configuration))  # noqa: E731
    return pick(old.spec) != pick(new_spec)


def _resolved_changes(old: Model, new: Model) -> Iterable[ResolvedChange]:
    for name, effect in [*((f, "restart") for f in RESTART_FIELDS),
                         *((f, "scale") for f in SCALE_FIELDS),
                         *((f, "none") for f in OTHER_FIELDS)]:
        a, b = _resolved_value(old, name), _resolved_value(new, name)
        if a == b:
            continue
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a or {}, b or {}
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    yield ResolvedChange(f"{name}.{key}", a.get(key), b.get(key), effect)  # type: ignore[arg-type]
        else:
            yield ResolvedChange(name, a, b, effect)  # type: ignore[arg-type]


def _resolved_value(model: Model, name: str) -> Any:
    if name == "template":
        return model.template.name if model.template else None
    value = getattr(model, name)
    if name == "async_tasks":  # compared only where it applies: the limits of an ASYNC model's tasks
        return asdict(value) if model.is_async else None
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def model_facts(model: Model) -> str:
    """One line: image, GPUs and worker bounds, for an added or removed model."""
    gpu = f"{model.gpus}× {model.gpu_type}" if model.gpus and model.gpu_type else "no GPU"
    origin = f"template {model.template.name}" if model.template else "v5"
    limits = model.async_tasks
    queued = (f", ASYNC (tasks up to {limits.task_timeout_seconds} s, {limits.max_deliveries} deliveries, "
              f"results kept {limits.result_ttl_seconds} s)") if model.is_async else ""
    return (f"{origin}, {model.image}, {gpu}, workers {model.min_workers}..{model.max_workers}"
            + (", high priority" if model.high_priority else "") + queued)


# -- GPUs ---------------------------------------------------------------------


def _gpu_rows(base: Optional[Catalog], current: Catalog) -> tuple[GpuRow, ...]:
    before = base.gpu_totals() if base else {}
    after = current.gpu_totals()
    quota = current.settings.gpu_quota or {}
    rows = []
    for gpu in sorted(set(before) | set(after)):
        lo_b, hi_b = before.get(gpu, (0, 0))
        lo_a, hi_a = after.get(gpu, (0, 0))
        rows.append(GpuRow(gpu, lo_b, lo_a, hi_b, hi_a, quota.get(gpu)))
    return tuple(rows)


# -- warnings -----------------------------------------------------------------


def _warnings(base: Optional[Catalog], current: Catalog, models: tuple[EntityDiff, ...],
              templates: tuple[EntityDiff, ...], settings: tuple[FieldChange, ...],
              gpus: tuple[GpuRow, ...], base_problem: Optional[str]) -> tuple[Warning, ...]:
    out: list[Warning] = []
    if base_problem:
        out.append(Warning("no-base", base_problem))
    for d in models:
        new = current.models.get(d.name)
        old = base.models.get(d.name) if base else None
        if new is not None and new.high_priority and new.min_workers == 0 and (
                old is None or old.min_workers > 0 or not old.high_priority):
            out.append(Warning("high-priority-scale-to-zero",
                               f"model '{d.name}' is high priority but can now scale to zero "
                               f"(min_workers 0): its first request after idling waits for a cold start"))
        if d.status == "removed" and old is not None and old.group:
            out.append(Warning("removed-model-in-group",
                               f"model '{d.name}' is removed; group '{old.group}' loses it"))
    out += _broker_warnings(base, current)
    for t in templates:
        if t.rolls:
            n = len(t.rolls)
            out.append(Warning("template-rolls-models",
                               f"template '{t.name}' changed: rolls {n} model{'s' if n != 1 else ''} "
                               f"({', '.join(t.rolls)})"))
    for s in settings:
        key = s.field.split(".")[0]
        if key in SETTINGS_EFFECTS:
            out.append(Warning("settings-" + key, f"{s.path} changed: {SETTINGS_EFFECTS[key]}"))
    for row in gpus:
        if row.quota is not None and row.max_after > row.quota:
            out.append(Warning("gpu-quota",
                               f"{row.gpu_type}: {row.max_after} GPUs at max scale exceed the stack's "
                               f"quota of {row.quota} (sgp-infra:gpuQuota)"))
    return tuple(out)


def _broker_warnings(base: Optional[Catalog], current: Catalog) -> list[Warning]:
    """The in-cluster NATS of ASYNC models appearing or going away (plan/nats.py decides when it is planned)."""
    from ..plan.nats import plans_in_cluster_nats

    before = plans_in_cluster_nats(base) if base else False
    after = plans_in_cluster_nats(current)
    if after and not before:
        a = current.settings.async_
        return [Warning("broker-added",
                        f"an in-cluster NATS (JetStream) is planned for the ASYNC models: {a.replicas} server(s), "
                        f"a {a.storage} volume each")]
    if before and not after:
        return [Warning("broker-removed",
                        "the in-cluster NATS is no longer planned: tasks still queued and results kept on its "
                        "volumes are no longer served (the volumes stay until deleted)")]
    return []


def dangling_group_members(base: Optional[Catalog], current_raw: Mapping[str, Any]) -> list[Warning]:
    """Groups in an (invalid) current config that still list a model this change removed.

    Such a config is rejected by validation ("no model named ..."); this says
    *why* in review terms, so the author knows to edit the group as well.
    """
    if base is None:
        return []
    raw_models = current_raw.get("models") or {}
    raw_groups = current_raw.get("modelGroups") or {}
    if not isinstance(raw_models, Mapping) or not isinstance(raw_groups, Mapping):
        return []
    removed = {n for n in base.models if n not in raw_models}
    removed |= {base.models[n].id for n in removed}
    out = []
    for gname, body in sorted(raw_groups.items(), key=lambda kv: str(kv[0])):
        members = body.get("models") if isinstance(body, Mapping) else None
        for i, ref in enumerate(members if isinstance(members, list) else []):
            if isinstance(ref, str) and ref in removed:  # the config is invalid: a ref may be any YAML value
                out.append(Warning("removed-model-in-group",
                                   f"model '{ref}' is removed by this change but group '{gname}' still "
                                   f"lists it ({config_path('modelGroups', str(gname), 'models', i)}): "
                                   "remove it from the group too"))
    return out


# -- helpers ------------------------------------------------------------------


def _dump(spec: Any) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_none=True)


def _field_changes(before: Mapping[str, Any], after: Mapping[str, Any], path_of: Any,
                   prefix: tuple[str, ...] = ()) -> Iterable[FieldChange]:
    """Leaf-level differences of two nested maps (lists compare as whole values)."""
    for key in sorted(set(before) | set(after), key=str):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        parts = (*prefix, str(key))
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            yield from _field_changes(a, b, path_of, parts)
        elif (isinstance(a, Mapping) and b is None) or (isinstance(b, Mapping) and a is None):
            # a whole sub-map appeared or went away: report its leaves
            yield from _field_changes(a if isinstance(a, Mapping) else {},
                                      b if isinstance(b, Mapping) else {}, path_of, parts)
        else:
            yield FieldChange(".".join(parts), path_of(parts), a, b)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
