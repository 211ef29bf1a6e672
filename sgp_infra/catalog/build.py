"""Turn raw ``sgp-infra:*`` config values into a validated :class:`Catalog`.

Validation runs in passes and collects every problem before giving up:

1. stack settings and each entry's fields (pydantic, one entry at a time so a
   broken entry never hides another's errors);
2. per-entry rules pydantic cannot express (GPU/worker consistency, endpoint
   types, parameter schemas, object names);
3. references between entries (templates, groups) and creation parameters.

Errors never cascade: an entry that failed pass 1 still exists for the
references to it, and what can be read of it is read leniently, field by field
(:class:`_Ref`, :class:`_TemplateFacts`).  So a model of an invalid template
still has its own problems reported (missing or undeclared creation
parameters, a wrong ``model_type``, scaling overrides) in the same run, and a
reference is only left unchecked when what it points at cannot be read (an id
that is itself invalid).  The result is either a :class:`Catalog` or
:class:`CatalogInvalid` listing everything, each error with its config path.
"""

from __future__ import annotations

import difflib
import functools
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Iterable, Mapping, Optional, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from .entities import (
    MIG_GPU_TYPES,
    CreateModelEndpointConfig,
    LaunchVendorConfiguration,
    ModelBundleConfiguration,
    ModelGroup,
    ModelInfra,
    ModelTemplate,
    ModelV4,
    ModelV5,
    ParameterSchemaField,
    RequiredResources,
)
from .errors import CatalogInvalid, ConfigError, config_path
from .model import Catalog, Group, Model, Template, resolve_async_tasks, resolve_inference
from .naming import EntityKind, entity_id, image_ref_problems, object_name, object_name_problem
from .params import check_parameters, inject, placeholders, render_value
from .settings import CATALOG_KEYS, SECRET_KEYS, StackSettings

#: Endpoint types sgp-infra can deploy.  ASYNC runs on NATS JetStream
#: (docs/async.md); BATCH needs a job runner, which sgp-infra does not plan.
DEPLOYABLE_ENDPOINT_TYPES = frozenset({"SYNC", "STREAMING", "ASYNC"})


def build_catalog(raw: Mapping[str, Any]) -> Catalog:
    """Validate the ``sgp-infra`` namespace of a stack's config.

    ``raw`` maps keys without the namespace prefix (``accountId``,
    ``models``…) to their parsed values.  Raises :class:`CatalogInvalid` with
    every problem found.
    """
    return _Builder(raw).build()


_UNKNOWN: Any = object()  # a field of an invalid entry that cannot be read


@dataclass
class _Ref:
    """An entry as references to it see it, whether or not it is valid.

    ``id`` and ``account`` are ``None`` when the entry is invalid in a way
    that hides them (an invalid ``id`` or ``account_id``, an unreadable stack
    account).  A reference that may be such an unreadable id is not reported:
    it is not the referring entry's problem.
    """

    name: str
    id: Optional[str]
    account: Optional[str]
    raw: Any
    #: The text of an invalid explicit ``id`` (``id: 5``), which a reference may already use.
    id_text: Optional[str] = None

    def may_have_id(self, ref: str) -> bool:
        """Whether ``ref`` may be this entry's id although it cannot be read."""
        if self.id is not None:
            return False
        if self.id_text is not None:
            return ref == self.id_text
        return _looks_like_uuid(ref)  # a derived id whose account cannot be read


@dataclass(frozen=True)
class _TemplateFacts:
    """What a model's checks need of its template.

    From the validated template, or, when the template is invalid, read from
    its raw entry field by field: ``model_type`` and the worker bounds are
    ``None`` where they cannot be read, ``parameters`` and ``injectable`` hold
    what can be read, and the checks that need the rest are skipped.
    """

    ref: _Ref
    template: Optional[Template]
    model_type: Optional[str]
    parameters: tuple[ParameterSchemaField, ...]
    #: Every declared parameter is in ``parameters`` (so an undeclared one is an error).
    parameters_complete: bool
    injectable: tuple[tuple[tuple[Union[str, int], ...], str], ...]
    min_workers: Optional[int]
    max_workers: Optional[int]


class _Builder:
    def __init__(self, raw: Mapping[str, Any]):
        self.raw = raw
        self.errors: list[ConfigError] = []
        #: Every entry of each catalogue map, valid or not, as written.
        self._all: dict[str, dict[str, Any]] = {}
        #: Catalogue maps that are not maps at all: references into them cannot be checked.
        self._unreadable: set[str] = set()
        self._template_refs: Mapping[str, _Ref] = {}
        #: Entries by id, per catalogue map (built on first look-up).
        self._by_id: dict[str, dict[str, _Ref]] = {}

    def error(self, path: str, message: str) -> None:
        self.errors.append(ConfigError(path, message))

    # -- pass 1: shapes ------------------------------------------------------

    def build(self) -> Catalog:
        settings = self._settings()
        account = settings.account_id if settings else self._account_leniently()
        templates = self._entries("templates", lambda _e: ModelTemplate)
        models = self._entries("models", _model_class)
        groups = self._entries("modelGroups", lambda _e: ModelGroup)

        tpl_refs = self._refs("templates", templates, account, "model_template", lambda _e: ModelTemplate)
        model_refs = self._refs("models", models, account, "model", _model_class)
        grp_refs = self._refs("modelGroups", groups, account, "model_group", lambda _e: ModelGroup)

        tpl = {n: Template(n, tpl_refs[n].id or "", tpl_refs[n].account or "", s) for n, s in templates.items()}
        self._unique_ids("templates", tpl_refs)
        for t in tpl.values():
            self._check_template(t)
        facts = {n: _template_facts(ref, tpl.get(n)) for n, ref in tpl_refs.items()}
        self._template_refs = tpl_refs

        memberships = self._memberships(grp_refs, groups, model_refs, models)

        resolved: dict[str, Model] = {}
        for name, spec in models.items():
            model = self._resolve_model(name, spec, model_refs[name], facts, memberships.get(name))
            if model is not None:
                resolved[name] = model
                self._check_async(model)
        self._unique_ids("models", model_refs)
        self._object_names(model_refs)

        grp = {n: Group(n, grp_refs[n].id or "", grp_refs[n].account or "", s,
                        tuple(m for m, g in memberships.items() if g == n))
               for n, s in groups.items()}
        self._unique_ids("modelGroups", grp_refs)

        if self.errors or settings is None:
            raise CatalogInvalid(self.errors)
        # Settings are published as validated (``"false"`` from Pulumi and
        # ``false`` from a YAML file become the same value), so every loader
        # yields the same document.
        source = settings.model_dump(mode="json", by_alias=True, exclude_unset=True)
        source.update({k: self.raw[k] for k in CATALOG_KEYS if k in self.raw})
        return Catalog(settings=settings, templates=tpl, models=resolved, groups=grp, source=source)

    def _settings(self) -> Optional[StackSettings]:
        try:
            return StackSettings.model_validate(self._scalars())
        except ValidationError as exc:
            self._pydantic_errors((), exc, StackSettings, settings=True)
            return None

    def _scalars(self) -> dict[str, Any]:
        return {k: v for k, v in self.raw.items() if k not in CATALOG_KEYS and k not in SECRET_KEYS}

    def _account_leniently(self) -> Optional[str]:
        """The stack's account when the settings are invalid for another reason; else ``None``."""
        value = _read_field(StackSettings, self._scalars(), "account_id")
        return None if value is _UNKNOWN else value

    def _entries(self, key: str, model_for: Any) -> dict[str, Any]:
        self._all[key] = {}
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(config_path(key), f"must be a map of entries keyed by name, got {type(value).__name__}")
            self._unreadable.add(key)
            return {}
        out: dict[str, Any] = {}
        for name, entry in value.items():
            name = str(name)
            self._all[key][name] = entry
            if not isinstance(entry, Mapping):
                self.error(config_path(key, name), f"must be a map of fields, got {type(entry).__name__}")
                continue
            if "name" in entry and entry["name"] != name:
                self.error(config_path(key, name, "name"),
                           f"is {entry['name']!r} but the entry's key is {name!r}; they must match (or omit name)")
            cls = model_for(entry)
            try:
                out[name] = cls.model_validate(dict(entry))
            except ValidationError as exc:
                self._pydantic_errors((key, name), exc, cls)
        return out

    def _refs(self, key: str, specs: Mapping[str, Any], account: Optional[str], kind: EntityKind,
              model_for: Any) -> dict[str, _Ref]:
        """Every entry of ``key`` as references see it: valid ones exactly, invalid ones leniently."""
        out: dict[str, _Ref] = {}
        for name, entry in self._all[key].items():
            spec = specs.get(name)
            id_text = None
            if spec is not None:
                own_account, own_id = spec.account_id, spec.id
            elif not isinstance(entry, Mapping):
                own_account = own_id = None  # no fields at all: the stack's account, a derived id
            else:
                cls = model_for(entry)
                own_account = _read_field(cls, entry, "account_id")
                own_id = _read_field(cls, entry, "id")
                if own_id is _UNKNOWN and isinstance(entry.get("id"), (int, float, bool)):
                    id_text = str(entry["id"])
            acc = None if own_account is _UNKNOWN else (own_account or account)
            if own_id is _UNKNOWN:
                eid = None
            else:
                eid = own_id or (entity_id(acc, kind, name) if acc is not None else None)
            out[name] = _Ref(name, eid, acc, entry, id_text if own_id is _UNKNOWN else None)
        return out

    def _lookup(self, key: str, refs: Mapping[str, _Ref], ref: str) -> tuple[Optional[_Ref], bool]:
        """``(entry, certain)``: the entry named ``ref`` or with id ``ref``; ``certain`` is False when
        none was found but ``ref`` may be an entry whose id cannot be read."""
        by_id = self._by_id.get(key)
        if by_id is None:
            by_id = self._by_id[key] = {}
            for entry in refs.values():
                if entry.id is not None:
                    by_id.setdefault(entry.id, entry)
        found = refs.get(ref) or by_id.get(ref)
        if found is not None:
            return found, True
        return None, key not in self._unreadable and not any(r.may_have_id(ref) for r in refs.values())

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
            elif kind in ("model_type", "dict_type", "list_type"):
                # pydantic says "a valid dictionary or instance of ApiSettings": YAML users write maps and lists
                shape = "a list" if kind == "list_type" else "a map of fields" if kind == "model_type" else "a map"
                message = f"must be {shape}, got {_yaml_type(err.get('input'))}"
            else:
                message = err["msg"].removeprefix("Value error, ")
                if kind.startswith("string_type") and isinstance(err.get("input"), (int, float)):
                    message += " (quote it in YAML)"
                elif kind in ("enum", "literal_error") and isinstance(err.get("input"), str):
                    message += _enum_hint(err["input"], str(err.get("ctx", {}).get("expected", "")))
            self.error(config_path(*prefix, *loc), message)

    def _unique_ids(self, key: str, refs: Mapping[str, _Ref]) -> None:
        seen: dict[str, str] = {}
        for name, ref in refs.items():
            if ref.id is None:
                continue
            other = seen.setdefault(ref.id, name)
            if other != name:
                self.error(config_path(key, name, "id"), f"id {ref.id!r} is already the id of '{other}'")

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
        if endpoint_type.upper() == "BATCH":
            self.error(config_path(*path), "BATCH endpoints (batch jobs) are not deployable by sgp-infra; "
                                           "use ASYNC for queued inference, or SYNC or STREAMING")
        elif endpoint_type.upper() not in DEPLOYABLE_ENDPOINT_TYPES:
            self.error(config_path(*path), f"{endpoint_type} endpoints are not deployable by sgp-infra; "
                                           "use SYNC, STREAMING or ASYNC")

    def _check_async(self, model: Model) -> None:
        """ASYNC rules: a task queue nobody may ever pull from is a config error, not a silent backlog."""
        if model.endpoint_type != "ASYNC" or model.max_workers > 0:
            return
        path = (config_path(*model.path_parts, "vendor_configuration", "model_infra", "max_workers")
                if model.api_version == "v5" else config_path(*model.path_parts, "max_workers"))
        self.error(path, "is 0, but an ASYNC model needs at least one worker to run its queued tasks")

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

    def _resolve_model(self, name: str, spec: Union[ModelV4, ModelV5], ref: _Ref,
                       templates: Mapping[str, _TemplateFacts], group: Optional[str]) -> Optional[Model]:
        """Check a model against its template and resolve it; ``None`` if it cannot be.

        A model of an invalid template is checked as far as the template can be
        read (its own problems are reported now, not after the template is
        fixed), but not resolved.
        """
        base = ("models", name)
        if isinstance(spec, ModelV5):
            return self._resolve_v5(name, spec, ref, group)
        if spec.model_template_id is None:
            self.error(config_path(*base, "model_template_id"),
                       "is required: sgp-infra deploys v4 models from a template (give its name or id); "
                       "a self-contained model uses vendor_configuration.model_image and model_infra (v5)")
            return None
        if spec.model_vendor != "LAUNCH":
            self.error(config_path(*base, "model_vendor"),
                       f"is {spec.model_vendor}, but a model built from a template is deployed by LAUNCH")
        tref, certain = self._lookup("templates", self._template_refs, spec.model_template_id)
        if tref is None:
            if certain:
                known = ", ".join(sorted(templates)) or "none"
                self.error(config_path(*base, "model_template_id"),
                           f"no template named or with id '{spec.model_template_id}' (templates: {known})")
            return None
        t = templates[tref.name]
        if tref.account is not None and ref.account is not None and tref.account != ref.account:
            self.error(config_path(*base, "model_template_id"),
                       f"template '{tref.name}' belongs to account '{tref.account}', this model to '{ref.account}'")
        if t.model_type is not None and spec.model_type != t.model_type:
            self.error(config_path(*base, "model_type"),
                       f"is {spec.model_type} but template '{tref.name}' serves {t.model_type}")
        params = spec.model_creation_parameters
        ok = True
        for pname, problem in check_parameters(t.parameters, params, tref.name, complete=t.parameters_complete):
            self.error(config_path(*base, "model_creation_parameters", pname), problem)
            ok = False
        injected: dict[tuple[Union[str, int], ...], str] = {}
        for loc, text in t.injectable:
            missing = [p for p in placeholders(text) if p not in params]
            for p in missing:
                if ok:  # a missing required parameter was already reported
                    self.error(config_path(*base, "model_creation_parameters"),
                               f"template '{tref.name}' uses ${{{p}}} in bundle_config.{_loc_text(loc)}, "
                               f"but this model sets no creation parameter '{p}'")
            injected[loc] = text if missing else inject(text, params)
        min_w = spec.min_workers if spec.min_workers is not None else t.min_workers
        max_w = spec.max_workers if spec.max_workers is not None else t.max_workers
        if min_w is not None and max_w is not None:
            self._check_workers(base, min_w, max_w, "" if spec.max_workers is not None
                                else f" (from template '{tref.name}')")
        if t.template is None or min_w is None or max_w is None or ref.id is None or ref.account is None:
            return None
        tpl = t.template
        bc = tpl.spec.vendor_configuration.bundle_config
        ec = tpl.spec.vendor_configuration.endpoint_config
        per_w = spec.per_worker if spec.per_worker is not None else ec.per_worker
        return Model(
            name=name, id=ref.id, account_id=ref.account, api_version="v4", spec=spec,
            object_name=object_name(name), model_type=spec.model_type, model_vendor=spec.model_vendor,
            template=tpl, group=group,
            image=f"{bc.registry}/{bc.image}:{bc.tag}",
            command=_list_at(injected, "command", bc.command),
            streaming_command=_list_at(injected, "streaming_command", bc.streaming_command),
            env={k: injected[("env", k)] for k in bc.env},
            healthcheck_route=bc.healthcheck_route, predict_route=bc.predict_route,
            streaming_predict_route=bc.streaming_predict_route,
            readiness_initial_delay_seconds=bc.readiness_initial_delay_seconds,
            endpoint_type=tpl.spec.endpoint_type, endpoint_protocol=tpl.spec.endpoint_protocol,
            cpus=ec.cpus, memory=ec.memory, storage=ec.storage, gpus=ec.gpus, gpu_type=ec.gpu_type,
            min_workers=min_w, max_workers=max_w, per_worker=per_w, high_priority=ec.high_priority,
            inference=resolve_inference(spec.model_type, tpl.spec.inference, spec.inference),
            async_tasks=resolve_async_tasks(tpl.spec.async_tasks, spec.async_tasks),
            # The model's own list replaces the template's (docs/kubernetes.md: least privilege).
            secrets=tuple(spec.secrets if spec.secrets is not None else tpl.spec.secrets or ()),
            secrets_path=base if spec.secrets is not None else ("templates", tpl.name),
        )

    def _resolve_v5(self, name: str, spec: ModelV5, ref: _Ref, group: Optional[str]) -> Optional[Model]:
        base = ("models", name, "vendor_configuration")
        img, infra = spec.vendor_configuration.model_image, spec.vendor_configuration.model_infra
        self._check_image((*base, "model_image"), img.registry, img.repository, img.tag, "repository")
        self._check_resources((*base, "model_infra"), infra)
        self._check_workers((*base, "model_infra"), infra.min_workers, infra.max_workers)
        self._check_endpoint_type((*base, "model_infra", "endpoint_type"), infra.endpoint_type)
        if ref.id is None or ref.account is None:
            return None
        return Model(
            name=name, id=ref.id, account_id=ref.account, api_version="v5", spec=spec,
            object_name=object_name(name), model_type=spec.model_type, model_vendor=spec.model_vendor,
            template=None, group=group,
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
            inference=resolve_inference(spec.model_type, spec.inference),
            async_tasks=resolve_async_tasks(spec.async_tasks),
            secrets=tuple(spec.secrets or ()), secrets_path=("models", name),
        )

    def _memberships(self, groups: Mapping[str, _Ref], group_specs: Mapping[str, ModelGroup],
                     models: Mapping[str, _Ref], model_specs: Mapping[str, Union[ModelV4, ModelV5]]
                     ) -> dict[str, str]:
        """Model name → group name, from both directions; conflicts are errors.

        Invalid groups and models take part with what can be read of them
        (a group's ``models``, a model's ``model_group_id``), so a conflict is
        reported whatever else is wrong with either side.
        """
        out: dict[str, str] = {}
        where: dict[str, str] = {}

        def assign(model: str, group: str, path: str) -> None:
            if out.get(model, group) != group:
                self.error(path, f"model '{model}' is already in group '{out[model]}' ({where[model]}); "
                                 "a model belongs to at most one group")
                return
            g_acc, m_acc = groups[group].account, models[model].account
            if g_acc is not None and m_acc is not None and g_acc != m_acc:
                self.error(path, f"model '{model}' and group '{group}' belong to different accounts")
            out[model] = group
            where.setdefault(model, path)

        for gname, gref in groups.items():
            spec = group_specs.get(gname)
            members = spec.models if spec is not None else _read_field(ModelGroup, gref.raw, "models")
            if members is _UNKNOWN:
                continue
            for i, ref in enumerate(members):
                member, certain = self._lookup("models", models, ref)
                path = config_path("modelGroups", gname, "models", i)
                if member is None:
                    if certain:
                        self.error(path, f"no model named or with id '{ref}'")
                    continue
                assign(member.name, gname, path)
        for mname, mref in models.items():
            mspec = model_specs.get(mname)
            if mspec is not None:
                gref_text = getattr(mspec, "model_group_id", None)
            elif isinstance(mref.raw, Mapping) and _model_class(mref.raw) is ModelV4:
                gref_text = _read_field(ModelV4, mref.raw, "model_group_id")
            else:
                gref_text = None
            if gref_text is None or gref_text is _UNKNOWN:
                continue
            group, certain = self._lookup("modelGroups", groups, gref_text)
            path = config_path("models", mname, "model_group_id")
            if group is None:
                if certain:
                    known = ", ".join(sorted(groups)) or "none"
                    self.error(path, f"no model group named or with id '{gref_text}' (groups: {known})")
                continue
            assign(mname, group.name, path)
        return out

    def _object_names(self, models: Mapping[str, _Ref]) -> None:
        """Every model's Kubernetes object name, valid entry or not: it depends on the name alone."""
        seen: dict[str, str] = {}
        for name in models:
            problem = object_name_problem(name)
            if problem:
                self.error(config_path("models", name), problem)
                continue
            slug = object_name(name)
            other = seen.setdefault(slug, name)
            if other != name:
                self.error(config_path("models", name),
                           f"maps to Kubernetes object name '{slug}', "
                           f"the same as {config_path('models', other)}; rename one")


def _yaml_type(value: Any) -> str:
    """What a value is, in YAML's words (``a string 'x'``, ``a number``, ``a list``...)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string {value[:40]!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


def _enum_hint(given: str, expected: str) -> str:
    """What to write instead of a wrong enum value: the same word in the right casing, else the closest.

    v4 entries spell enums in uppercase and v5 entries in lowercase (the API's
    own spellings), so ``SYNC`` in a v5 model is the commonest slip.
    """
    values = re.findall(r"'([^']*)'", expected)
    same = [v for v in values if v.lower() == given.lower()]
    if same:
        return f" (got '{given}'; the casing matters: write '{same[0]}')"
    close = difflib.get_close_matches(given, values, n=1)
    return f" (got '{given}'; did you mean '{close[0]}'?)" if close else f" (got '{given}')"


def _model_class(entry: Mapping[str, Any]) -> type[Union[ModelV4, ModelV5]]:
    """v5 when the entry is self-contained (``vendor_configuration``), else v4."""
    return ModelV5 if "vendor_configuration" in entry else ModelV4


def _looks_like_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def _read_field(cls: type[BaseModel], data: Any, field: str) -> Any:
    """One field of ``cls`` read alone from a raw entry that failed validation as a whole.

    Its validated value, its default when absent, else ``_UNKNOWN`` (invalid,
    required and absent, or ``data`` is not a map).
    """
    if not isinstance(data, Mapping):
        return _UNKNOWN
    info = cls.model_fields[field]
    key = info.alias or field
    if key not in data:
        return _UNKNOWN if info.is_required() else info.get_default(call_default_factory=True)
    try:
        return _field_adapter(cls, field).validate_python(data[key])
    except ValidationError:
        return _UNKNOWN


@functools.cache
def _field_adapter(cls: type[BaseModel], field: str) -> TypeAdapter[Any]:
    """A validator for one field of ``cls``, its constraints included."""
    info = cls.model_fields[field]
    params = (info.annotation, *info.metadata)
    annotation: Any = Annotated[params] if info.metadata else info.annotation
    return TypeAdapter(annotation)


def _template_facts(ref: _Ref, template: Optional[Template]) -> _TemplateFacts:
    """What models need of a template: exact for a valid one, read field by field from an invalid one."""
    if template is not None:
        spec = template.spec
        schema = spec.model_creation_parameters_schema
        ec = spec.vendor_configuration.endpoint_config
        return _TemplateFacts(ref, template, spec.model_type, tuple(schema.parameters) if schema else (), True,
                              tuple(_injectable(spec)), ec.min_workers, ec.max_workers)
    entry = ref.raw
    if not isinstance(entry, Mapping):
        return _TemplateFacts(ref, None, None, (), False, (), None, None)
    model_type = _read_field(ModelTemplate, entry, "model_type")
    parameters, complete = _parameters_leniently(entry.get("model_creation_parameters_schema"))
    vc = entry.get("vendor_configuration")
    bc = vc.get("bundle_config") if isinstance(vc, Mapping) else None
    injectable: list[tuple[tuple[Union[str, int], ...], str]] = []
    for key in ("command", "streaming_command"):
        value = _read_field(ModelBundleConfiguration, bc, key)
        if value is not _UNKNOWN:
            injectable += [((key, i), text) for i, text in enumerate(value or [])]
    env = _read_field(ModelBundleConfiguration, bc, "env")
    if env is not _UNKNOWN:
        injectable += [(("env", k), text) for k, text in env.items()]
    ec = _read_field(LaunchVendorConfiguration, vc, "endpoint_config")
    if ec is _UNKNOWN:  # invalid as a whole: read the worker bounds alone
        raw_ec = vc.get("endpoint_config") if isinstance(vc, Mapping) else None
        bounds = [_read_field(CreateModelEndpointConfig, raw_ec, f) for f in ("min_workers", "max_workers")]
    else:
        bounds = [ec.min_workers, ec.max_workers]
    min_w, max_w = (None if b is _UNKNOWN else b for b in bounds)
    return _TemplateFacts(ref, None, None if model_type is _UNKNOWN else model_type, parameters, complete,
                          tuple(injectable), min_w, max_w)


def _parameters_leniently(schema: Any) -> tuple[tuple[ParameterSchemaField, ...], bool]:
    """The declared parameters that can be read, and whether that is all of them."""
    if schema is None:
        return (), True
    items = schema.get("parameters") if isinstance(schema, Mapping) else None
    if not isinstance(items, list):
        return (), False
    good = []
    for item in items:
        try:
            good.append(ParameterSchemaField.model_validate(item))
        except ValidationError:
            pass
    return tuple(good), len(good) == len(items)


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
