"""Turn raw ``sgp-infra:*`` config values into a validated :class:`Catalog`.

Validation runs in passes and collects every problem before giving up:

1. stack settings and each entry's fields (pydantic, one entry at a time so a
   broken entry never hides another's errors);
2. per-entry rules pydantic cannot express (GPU/worker consistency, endpoint
   types, parameter schemas, object names);
3. references between entries (templates, groups) and creation parameters.

An entry that failed pass 1 is skipped by later passes rather than reported
again as "unknown".  The result is either a :class:`Catalog` or
:class:`CatalogInvalid` listing everything, each error with its config path.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .entities import (
    MIG_GPU_TYPES,
    ModelGroup,
    ModelInfra,
    ModelTemplate,
    ModelV4,
    ModelV5,
    RequiredResources,
)
from .errors import CatalogInvalid, ConfigError, config_path
from .model import Catalog, Group, Model, Template
from .naming import EntityKind, entity_id, image_ref_problems, object_name, object_name_problem
from .params import check_parameters, inject, placeholders, render_value
from .settings import CATALOG_KEYS, SECRET_KEYS, StackSettings

#: Endpoint types sgp-infra can deploy today.  ASYNC and BATCH need a queue
#: and a job runner, which are planned in a later issue.
DEPLOYABLE_ENDPOINT_TYPES = frozenset({"SYNC", "STREAMING"})


def build_catalog(raw: Mapping[str, Any]) -> Catalog:
    """Validate the ``sgp-infra`` namespace of a stack's config.

    ``raw`` maps keys without the namespace prefix (``accountId``,
    ``models``…) to their parsed values.  Raises :class:`CatalogInvalid` with
    every problem found.
    """
    return _Builder(raw).build()


class _Builder:
    def __init__(self, raw: Mapping[str, Any]):
        self.raw = raw
        self.errors: list[ConfigError] = []
        self._failed: dict[str, list[str]] = {}

    def error(self, path: str, message: str) -> None:
        self.errors.append(ConfigError(path, message))

    # -- pass 1: shapes ------------------------------------------------------

    def build(self) -> Catalog:
        settings = self._settings()
        account = settings.account_id if settings else ""
        templates = self._entries("templates", lambda _e: ModelTemplate)
        models = self._entries("models", lambda e: ModelV5 if "vendor_configuration" in e else ModelV4)
        groups = self._entries("modelGroups", lambda _e: ModelGroup)

        tpl = {n: Template(n, *_identity(s, account, "model_template", n), s) for n, s in templates.items()}
        self._unique_ids("templates", tpl)
        for t in tpl.values():
            self._check_template(t)

        grp_specs = {n: (*_identity(s, account, "model_group", n), s) for n, s in groups.items()}
        # Each model's (id, account) once (the id is a UUIDv5): memberships and resolution both need it.
        model_ids = {n: _identity(s, account, "model", n) for n, s in models.items()}
        memberships = self._memberships(grp_specs, models, model_ids)

        resolved: dict[str, Model] = {}
        templates_failed = set(self._failed["templates"])
        for name, spec in models.items():
            mid, acc = model_ids[name]
            model = self._resolve_model(name, spec, mid, acc, tpl, templates_failed, memberships.get(name))
            if model is not None:
                resolved[name] = model
        self._unique_ids("models", resolved)
        self._object_names(resolved)

        grp = {n: Group(n, gid, acc, s, tuple(m for m, g in memberships.items() if g == n))
               for n, (gid, acc, s) in grp_specs.items()}
        self._unique_ids("modelGroups", grp)

        if self.errors or settings is None:
            raise CatalogInvalid(self.errors)
        # Settings are published as validated (``"false"`` from Pulumi and
        # ``false`` from a YAML file become the same value), so every loader
        # yields the same document.
        source = settings.model_dump(mode="json", by_alias=True, exclude_unset=True)
        source.update({k: self.raw[k] for k in CATALOG_KEYS if k in self.raw})
        return Catalog(settings=settings, templates=tpl, models=resolved, groups=grp, source=source)

    def _settings(self) -> Optional[StackSettings]:
        scalars = {k: v for k, v in self.raw.items() if k not in CATALOG_KEYS and k not in SECRET_KEYS}
        try:
            return StackSettings.model_validate(scalars)
        except ValidationError as exc:
            self._pydantic_errors((), exc, StackSettings, settings=True)
            return None

    def _entries(self, key: str, model_for: Any) -> dict[str, Any]:
        self._failed[key] = []
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(config_path(key), f"must be a map of entries keyed by name, got {type(value).__name__}")
            return {}
        out: dict[str, Any] = {}
        for name, entry in value.items():
            name = str(name)
            if not isinstance(entry, Mapping):
                self.error(config_path(key, name), f"must be a map of fields, got {type(entry).__name__}")
                self._failed[key].append(name)
                continue
            if "name" in entry and entry["name"] != name:
                self.error(config_path(key, name, "name"),
                           f"is {entry['name']!r} but the entry's key is {name!r}; they must match (or omit name)")
            cls = model_for(entry)
            try:
                out[name] = cls.model_validate(dict(entry))
            except ValidationError as exc:
                self._pydantic_errors((key, name), exc, cls)
                self._failed[key].append(name)
        return out

    def _pydantic_errors(self, prefix: tuple[str, ...], exc: ValidationError, cls: type[BaseModel],
                         settings: bool = False) -> None:
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            kind = err["type"]
            if kind == "missing":
                message = "is required"
                if settings and loc == ("accountId",):
                    message += " (pulumi config set sgp-infra:accountId <account>)"
            elif kind == "extra_forbidden":
                known = _fields_at(cls, loc[:-1])
                if settings:
                    known = [*known, *CATALOG_KEYS, *SECRET_KEYS]
                hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
                message = "unknown field" if not settings else "unknown key"
                message += f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(sorted(known))})"
            else:
                message = err["msg"].removeprefix("Value error, ")
                if kind.startswith("string_type") and isinstance(err.get("input"), (int, float)):
                    message += " (quote it in YAML)"
            self.error(config_path(*prefix, *loc), message)

    def _unique_ids(self, key: str, entries: Mapping[str, Any]) -> None:
        seen: dict[str, str] = {}
        for name, entry in entries.items():
            other = seen.setdefault(entry.id, name)
            if other != name:
                self.error(config_path(key, name, "id"), f"id {entry.id!r} is already the id of '{other}'")

    # -- pass 2: per-entry rules --------------------------------------------

    def _check_resources(self, path: tuple[Union[str, int], ...],
                         res: Union[ModelInfra, RequiredResources]) -> None:
        if res.gpus > 0 and not res.gpu_type:
            self.error(config_path(*path, "gpu_type"), f"is required when gpus is {res.gpus}")
        if res.gpu_type and res.gpus == 0:
            self.error(config_path(*path, "gpus"),
                       f"is 0 but gpu_type is '{res.gpu_type}'; set gpus >= 1 or remove gpu_type")
        if res.gpu_type in MIG_GPU_TYPES and res.gpus > 1:
            self.error(config_path(*path, "gpus"),
                       f"is {res.gpus} but MIG slice '{res.gpu_type}' is exactly one GPU; use gpus: 1")

    def _check_workers(self, path: tuple[str, ...], min_workers: int, max_workers: int, where: str = "") -> None:
        if min_workers > max_workers:
            self.error(config_path(*path, "min_workers"),
                       f"is {min_workers}, above max_workers {max_workers}{where}")

    def _check_endpoint_type(self, path: tuple[str, ...], endpoint_type: str) -> None:
        if endpoint_type.upper() not in DEPLOYABLE_ENDPOINT_TYPES:
            self.error(config_path(*path), f"{endpoint_type} endpoints are not deployable by sgp-infra yet; "
                                           "use SYNC or STREAMING")

    def _check_image(self, path: tuple[str, ...], registry: str, repository: str, tag: str,
                     repository_field: str) -> None:
        for part, problem in image_ref_problems(registry, repository, tag).items():
            self.error(config_path(*path, repository_field if part == "repository" else part), problem)

    def _check_template(self, t: Template) -> None:
        base = ("templates", t.name)
        vc = t.spec.vendor_configuration
        bc = vc.bundle_config
        self._check_image((*base, "vendor_configuration", "bundle_config"), bc.registry, bc.image, bc.tag, "image")
        ec = vc.endpoint_config
        ecp = (*base, "vendor_configuration", "endpoint_config")
        self._check_resources(ecp, ec)
        self._check_workers(ecp, ec.min_workers, ec.max_workers)
        # The rule: the template's top-level endpoint_type decides; an
        # endpoint_config.endpoint_type, if written, must agree with it.
        if "endpoint_type" in ec.model_fields_set and ec.endpoint_type != t.spec.endpoint_type:
            self.error(config_path(*ecp, "endpoint_type"),
                       f"is {ec.endpoint_type} but the template's endpoint_type is {t.spec.endpoint_type}; "
                       "the top-level endpoint_type decides, so remove this one or make it equal")
        self._check_endpoint_type((*base, "endpoint_type"), t.spec.endpoint_type)
        ft = vc.fine_tuning_job_bundle_config
        if ft:
            self._check_image((*base, "vendor_configuration", "fine_tuning_job_bundle_config"),
                              ft.registry, ft.image, ft.tag, "image")
        if ft and ft.resources:
            self._check_resources((*base, "vendor_configuration", "fine_tuning_job_bundle_config", "resources"),
                                  ft.resources)
        for schema_key in ("model_creation_parameters_schema", "model_request_parameters_schema"):
            schema = getattr(t.spec, schema_key)
            seen: set[str] = set()
            for i, field in enumerate(schema.parameters if schema else []):
                if field.name in seen:
                    self.error(config_path(*base, schema_key, "parameters", i, "name"),
                               f"parameter '{field.name}' is declared twice")
                seen.add(field.name)
        declared = {f.name for f in (t.spec.model_creation_parameters_schema.parameters
                                     if t.spec.model_creation_parameters_schema else [])}
        for loc, text in _injectable(t.spec):
            for name in placeholders(text):
                if name not in declared:
                    self.error(config_path(*base, "vendor_configuration", "bundle_config", *loc),
                               f"uses ${{{name}}} but model_creation_parameters_schema declares no '{name}'")

    # -- pass 3: models and references --------------------------------------

    def _resolve_model(self, name: str, spec: Union[ModelV4, ModelV5], mid: str, acc: str,
                       templates: Mapping[str, Template], templates_failed: set[str],
                       group: Optional[str]) -> Optional[Model]:
        base = ("models", name)
        if isinstance(spec, ModelV5):
            return self._resolve_v5(name, spec, acc, mid, group)
        if spec.model_template_id is None:
            self.error(config_path(*base, "model_template_id"),
                       "is required: sgp-infra deploys v4 models from a template (give its name or id); "
                       "a self-contained model uses vendor_configuration.model_image and model_infra (v5)")
            return None
        if spec.model_vendor != "LAUNCH":
            self.error(config_path(*base, "model_vendor"),
                       f"is {spec.model_vendor}, but a model built from a template is deployed by LAUNCH")
        t = _by_name_or_id(templates, spec.model_template_id)
        if t is None:
            if spec.model_template_id not in templates_failed:
                known = ", ".join(sorted(templates)) or "none"
                self.error(config_path(*base, "model_template_id"),
                           f"no template named or with id '{spec.model_template_id}' (templates: {known})")
            return None
        if t.account_id != acc:
            self.error(config_path(*base, "model_template_id"),
                       f"template '{t.name}' belongs to account '{t.account_id}', this model to '{acc}'")
        if spec.model_type != t.spec.model_type:
            self.error(config_path(*base, "model_type"),
                       f"is {spec.model_type} but template '{t.name}' serves {t.spec.model_type}")
        params = spec.model_creation_parameters
        ok = True
        for pname, problem in check_parameters(t.spec.model_creation_parameters_schema, params, t.name):
            self.error(config_path(*base, "model_creation_parameters", pname), problem)
            ok = False
        bc = t.spec.vendor_configuration.bundle_config
        ec = t.spec.vendor_configuration.endpoint_config
        injected: dict[tuple[Union[str, int], ...], str] = {}
        for loc, text in _injectable(t.spec):
            missing = [p for p in placeholders(text) if p not in params]
            for p in missing:
                if ok:  # a missing required parameter was already reported
                    self.error(config_path(*base, "model_creation_parameters"),
                               f"template '{t.name}' uses ${{{p}}} in bundle_config.{_loc_text(loc)}, "
                               f"but this model sets no creation parameter '{p}'")
            injected[loc] = text if missing else inject(text, params)
        min_w = spec.min_workers if spec.min_workers is not None else ec.min_workers
        max_w = spec.max_workers if spec.max_workers is not None else ec.max_workers
        per_w = spec.per_worker if spec.per_worker is not None else ec.per_worker
        self._check_workers(base, min_w, max_w, "" if spec.max_workers is not None
                            else f" (from template '{t.name}')")
        return Model(
            name=name, id=mid, account_id=acc, api_version="v4", spec=spec, object_name=object_name(name),
            model_type=spec.model_type, model_vendor=spec.model_vendor, template=t, group=group,
            image=f"{bc.registry}/{bc.image}:{bc.tag}",
            command=_list_at(injected, "command", bc.command),
            streaming_command=_list_at(injected, "streaming_command", bc.streaming_command),
            env={k: injected[("env", k)] for k in bc.env},
            healthcheck_route=bc.healthcheck_route, predict_route=bc.predict_route,
            streaming_predict_route=bc.streaming_predict_route,
            readiness_initial_delay_seconds=bc.readiness_initial_delay_seconds,
            endpoint_type=t.spec.endpoint_type, endpoint_protocol=t.spec.endpoint_protocol,
            cpus=ec.cpus, memory=ec.memory, storage=ec.storage, gpus=ec.gpus, gpu_type=ec.gpu_type,
            min_workers=min_w, max_workers=max_w, per_worker=per_w, high_priority=ec.high_priority,
        )

    def _resolve_v5(self, name: str, spec: ModelV5, acc: str, mid: str, group: Optional[str]) -> Model:
        base = ("models", name, "vendor_configuration")
        img, infra = spec.vendor_configuration.model_image, spec.vendor_configuration.model_infra
        self._check_image((*base, "model_image"), img.registry, img.repository, img.tag, "repository")
        self._check_resources((*base, "model_infra"), infra)
        self._check_workers((*base, "model_infra"), infra.min_workers, infra.max_workers)
        self._check_endpoint_type((*base, "model_infra", "endpoint_type"), infra.endpoint_type)
        return Model(
            name=name, id=mid, account_id=acc, api_version="v5", spec=spec, object_name=object_name(name),
            model_type=spec.model_type, model_vendor=spec.model_vendor, template=None, group=group,
            image=f"{img.registry}/{img.repository}:{img.tag}",
            command=tuple(img.command),
            streaming_command=tuple(img.streaming_command) if img.streaming_command else None,
            env={k: render_value(v) for k, v in img.env_vars.items()},
            healthcheck_route=img.healthcheck_route, predict_route=img.predict_route,
            streaming_predict_route=img.streaming_predict_route,
            readiness_initial_delay_seconds=img.readiness_delay,
            endpoint_type=infra.endpoint_type.upper(), endpoint_protocol="SGP",
            cpus=infra.cpus, memory=infra.memory, storage=infra.storage, gpus=infra.gpus,
            gpu_type=infra.gpu_type, min_workers=infra.min_workers, max_workers=infra.max_workers,
            per_worker=infra.per_worker, high_priority=infra.high_priority, labels=dict(infra.labels),
        )

    def _memberships(self, groups: Mapping[str, tuple[str, str, ModelGroup]],
                     models: Mapping[str, Union[ModelV4, ModelV5]],
                     identities: Mapping[str, tuple[str, str]]) -> dict[str, str]:
        """Model name → group name, from both directions; conflicts are errors."""
        by_id = {gid: n for n, (gid, _a, _s) in groups.items()}
        model_ids = {mid: n for n, (mid, _acc) in identities.items()}
        failed_models = set(self._failed["models"])
        failed_groups = set(self._failed["modelGroups"])
        out: dict[str, str] = {}
        where: dict[str, str] = {}

        def assign(model: str, group: str, path: str) -> None:
            if out.get(model, group) != group:
                self.error(path, f"model '{model}' is already in group '{out[model]}' ({where[model]}); "
                                 "a model belongs to at most one group")
                return
            if groups[group][1] != identities[model][1]:
                self.error(path, f"model '{model}' and group '{group}' belong to different accounts")
            out[model] = group
            where.setdefault(model, path)

        for gname, (_gid, _acc, spec) in groups.items():
            for i, ref in enumerate(spec.models):
                member = ref if ref in models else model_ids.get(ref)
                path = config_path("modelGroups", gname, "models", i)
                if member is None:
                    if ref not in failed_models:
                        self.error(path, f"no model named or with id '{ref}'")
                    continue
                assign(member, gname, path)
        for mname, model_spec in models.items():
            group_ref: Optional[str] = getattr(model_spec, "model_group_id", None)
            if group_ref is None:
                continue
            group = group_ref if group_ref in groups else by_id.get(group_ref)
            path = config_path("models", mname, "model_group_id")
            if group is None:
                if group_ref not in failed_groups:
                    known = ", ".join(sorted(groups)) or "none"
                    self.error(path, f"no model group named or with id '{group_ref}' (groups: {known})")
                continue
            assign(mname, group, path)
        return out

    def _object_names(self, models: Mapping[str, Model]) -> None:
        seen: dict[str, str] = {}
        for name, model in models.items():
            problem = object_name_problem(name)
            if problem:
                self.error(config_path("models", name), problem)
                continue
            other = seen.setdefault(model.object_name, name)
            if other != name:
                self.error(config_path("models", name),
                           f"maps to Kubernetes object name '{model.object_name}', "
                           f"the same as {config_path('models', other)}; rename one")


def _identity(spec: Any, account: str, kind: EntityKind, name: str) -> tuple[str, str]:
    """An entry's ``(id, account)``: its own, else the stack's account and the derived id."""
    acc = spec.account_id or account
    return spec.id or entity_id(acc, kind, name), acc


def _by_name_or_id(entries: Mapping[str, Any], ref: str) -> Any:
    """The entry named ``ref`` or, failing that, the one whose id is ``ref``."""
    if ref in entries:
        return entries[ref]
    return next((e for e in entries.values() if e.id == ref), None)


def _injectable(spec: ModelTemplate) -> Iterable[tuple[tuple[Union[str, int], ...], str]]:
    """Every string of a template's bundle where ``${param}`` is filled in."""
    bc = spec.vendor_configuration.bundle_config
    for key in ("command", "streaming_command"):
        for i, text in enumerate(getattr(bc, key) or []):
            yield (key, i), text
    for env_name, text in bc.env.items():
        yield ("env", env_name), text


def _list_at(injected: Mapping[tuple[Union[str, int], ...], str], key: str,
             original: Optional[list[str]]) -> Optional[tuple[str, ...]]:
    if original is None:
        return None
    return tuple(injected[(key, i)] for i in range(len(original)))


def _loc_text(loc: tuple[Union[str, int], ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc))


def _fields_at(cls: type[BaseModel], loc: tuple[Union[str, int], ...]) -> list[str]:
    """Field names (config spelling) of the model found at ``loc`` below ``cls``."""
    current: Any = cls
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {(f.alias or k): f for k, f in current.model_fields.items()}
            fields.update(current.model_fields)
            if part not in fields:
                return []
            current = fields[part].annotation
        else:
            args = get_args(current)
            current = args[-1] if args else None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or k for k, f in current.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    """Strip Optional/Annotated down to a model class where there is one."""
    while get_origin(tp) is not None and get_origin(tp) not in (list, dict):
        models = [a for a in get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            return models[0]
        args = [a for a in get_args(tp) if a is not type(None)]
        if not args:
            return None
        tp = args[0]
        if get_origin(tp) in (list, dict):
            return tp
    return tp
