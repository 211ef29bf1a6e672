"""Writes answer 405: the catalogue has one source of truth, the stack config.

Every create, update and delete the official clients can send to a catalogue
route is registered here so it gets a useful answer instead of a bare 405: a
JSON error naming the config path to edit and the ``pulumi config`` commands
that would make the change (built from the request body where it can be),
for the real stack file and with the ``--stack`` flag (see :func:`config_source`).
An entity the caller cannot see is described generically, exactly like one
that does not exist.
"""

from __future__ import annotations

import inspect
import shlex
from typing import Any, Callable, Optional, Sequence

import orjson
from fastapi import APIRouter, Depends, Request

from ..catalog import config_path
from ..catalog.sources import stack_name_of
from .auth import Caller, caller
from .common import index_of
from .errors import ApiError

router = APIRouter(tags=["writes (405)"])

_MAX_BODY = 64 * 1024
_PLACEHOLDER = "NAME"


def config_source(stack: Optional[str], config_file: Optional[str]) -> tuple[str, str]:
    """``(the file to edit, the flags that point pulumi config at it)`` for the 405 answers.

    A known stack name wins: the catalogue is that stack's config,
    ``stacks/Pulumi.<stack>.yaml`` (``Pulumi.yaml``'s ``stackConfigDir``),
    even where ``serve`` reads a published copy (in a pod).  Otherwise the file
    ``serve --config-file`` read is the one to edit, with ``--config-file`` on
    the commands (and ``--stack`` when its name says which stack it is).
    """
    if stack:
        return f"stacks/Pulumi.{stack}.yaml", f" --stack {shlex.quote(stack)}"
    if config_file:
        named = stack_name_of(config_file)
        flags = f" --stack {shlex.quote(named)}" if named else ""
        return config_file, f"{flags} --config-file {shlex.quote(config_file)}"
    return "stacks/Pulumi.<stack>.yaml", " --stack <stack>"


def _source(request: Request) -> tuple[str, str]:
    state = request.app.state
    return config_source(getattr(state, "stack", None), getattr(state, "config_file", None))


def _stack_flag(request: Request) -> str:
    """The flags of every suggested ``pulumi`` command (``config set``/``rm`` and ``up`` all take them)."""
    return _source(request)[1]


def _config_set(request: Request, path: str, value: str, *, placeholder: bool = False) -> str:
    """``pulumi config set --path``; ``value`` is shell-quoted unless it is a ``<placeholder>``."""
    shown = value if placeholder else shlex.quote(value)
    return f"pulumi config set{_stack_flag(request)} --path {shlex.quote(path)} {shown}"


def _config_rm(request: Request, path: str) -> str:
    return f"pulumi config rm{_stack_flag(request)} --path {shlex.quote(path)}"


def _config_file(request: Request) -> str:
    return _source(request)[0]


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object sent, or ``{}``; reading stops past ``_MAX_BODY`` (never buffered whole)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_BODY:
            return {}
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _scalar(value: Any) -> Optional[str]:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


def _set_commands(request: Request, key: str, name: str, fields: dict[str, Any],
                  example: tuple[str, str] = ("<field>", "<value>")) -> tuple[list[str], list[str]]:
    """One ``config set`` per scalar field (else one ``example`` field/value command),
    and the fields too nested for ``config set``."""
    commands, nested = [], []
    for field, value in fields.items():
        if field in ("id", "name", "account_id", "created_at", "created_by_user_id") or value is None:
            continue
        text = _scalar(value)
        if text is None:
            nested.append(field)
            continue
        commands.append(_config_set(request, config_path(key, name, field), text))
    if not commands:
        commands = [_config_set(request, config_path(key, name, example[0]), example[1], placeholder=True)]
    return commands, nested


def _refuse(request: Request, what: str, path: str, commands: list[str], nested: Sequence[str] = ()) -> ApiError:
    config_file = _config_file(request)
    detail = (f"{what} is not done through the API: the catalogue is the stack config "
              f"({config_file}). Edit {path}, then run `pulumi up{_stack_flag(request)}`.")
    if nested:
        detail += f" Write {', '.join(nested)} in the YAML file directly."
    return ApiError(405, detail, config_path=path, config_file=config_file, commands=commands, allow="GET")


def _name_of(request: Request, who: Caller, kind: str, ref: str) -> str:
    """The config key of a visible entity, else a placeholder (no existence leak)."""
    index = index_of(request)
    if kind == "models":
        entry = index.model(ref)
        return entry.model.name if entry and who.can_see(entry.model.account_id) else _PLACEHOLDER
    item = index.template(ref) if kind == "templates" else index.group(ref)
    return item["name"] if item and who.can_see(item["account_id"]) else _PLACEHOLDER


def _create(kind: str, noun: str) -> Callable[..., Any]:
    async def create(request: Request, who: Caller = Depends(caller)) -> None:
        body = await _body(request)
        given = body.get("name")
        name = given if isinstance(given, str) and given else _PLACEHOLDER
        commands, nested = _set_commands(request, kind, name, body)
        raise _refuse(request, f"Creating a {noun}", config_path(kind, name), commands, nested)
    create.__name__ = f"create_{kind}"
    return create


def _update(kind: str, noun: str, param: str) -> Callable[..., Any]:
    async def update(request: Request, who: Caller = Depends(caller), **_: str) -> None:
        name = _name_of(request, who, kind, request.path_params[param])
        commands, nested = _set_commands(request, kind, name, await _body(request))
        raise _refuse(request, f"Updating a {noun}", config_path(kind, name), commands, nested)
    update.__name__ = f"update_{kind}"
    return update


def _delete(kind: str, noun: str, param: str) -> Callable[..., Any]:
    async def delete(request: Request, who: Caller = Depends(caller), **_: str) -> None:
        name = _name_of(request, who, kind, request.path_params[param])
        path = config_path(kind, name)
        raise _refuse(request, f"Deleting a {noun}", path, [_config_rm(request, path)])
    delete.__name__ = f"delete_{kind}"
    return delete


def _with_path_param(fn: Callable[..., Any], param: Optional[str]) -> Callable[..., Any]:
    """Declare ``param`` in ``fn``'s signature so the OpenAPI document lists it."""
    if param is None:
        return fn
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params.insert(1, inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, annotation=str))
    params.sort(key=lambda p: p.kind)
    fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return fn


def _add(path: str, fn: Callable[..., Any], method: str, summary: str) -> None:
    router.add_api_route(path, fn, methods=[method], summary=summary, status_code=405,
                         responses={405: {"description": "the catalogue is edited in stack config"}},
                         name=f"{method.lower()} {path}")


for _kind, _noun, _base, _param in (
    ("templates", "model template", "/v4/model-templates", "model_template_id"),
    ("models", "model", "/v4/models", "model_id"),
    ("modelGroups", "model group", "/v4/model-groups", "model_group_id"),
    ("models", "model", "/v5/models", "model_id"),
):
    _add(_base, _create(_kind, _noun), "POST", f"Create a {_noun} (405: edit stack config)")
    if _kind != "templates":  # the v4 client has no template update
        _add(f"{_base}/{{{_param}}}", _with_path_param(_update(_kind, _noun, _param), _param), "PATCH",
             f"Update a {_noun} (405)")
    _add(f"{_base}/{{{_param}}}", _with_path_param(_delete(_kind, _noun, _param), _param), "DELETE",
         f"Delete a {_noun} (405)")


@router.post("/v4/model-groups/{model_group_id}/models/{model_instance_id}", status_code=405,
             summary="Add a model to a group (405: edit stack config)")
async def add_group_member(request: Request, model_group_id: str, model_instance_id: str,
                           who: Caller = Depends(caller)) -> None:
    model = _name_of(request, who, "models", model_instance_id)
    group = _name_of(request, who, "modelGroups", model_group_id)
    path = config_path("models", model, "model_group_id")
    raise _refuse(request, "Adding a model to a group", path, [_config_set(request, path, group)])


@router.delete("/v4/model-groups/{model_group_id}/models/{model_instance_id}", status_code=405,
               summary="Remove a model from a group (405: edit stack config)")
async def remove_group_member(request: Request, model_group_id: str, model_instance_id: str,
                              who: Caller = Depends(caller)) -> None:
    model = _name_of(request, who, "models", model_instance_id)
    path = config_path("models", model, "model_group_id")
    raise _refuse(request, "Removing a model from a group", path, [_config_rm(request, path)])


@router.post("/v4/models/{model_instance_id}/deployments", status_code=405,
             summary="Create a deployment (405: pulumi up deploys every model)")
async def create_deployment(request: Request, model_instance_id: str, who: Caller = Depends(caller)) -> None:
    model = _name_of(request, who, "models", model_instance_id)
    raise _refuse(request, "Creating a deployment", config_path("models", model),
                  [f"pulumi up{_stack_flag(request)}"])


_SCALING = ("min_workers", "max_workers", "per_worker")


@router.patch("/v4/models/{model_instance_id}/deployments/{deployment_id}", status_code=405,
              summary="Update a deployment (405: edit stack config)")
async def update_deployment(request: Request, model_instance_id: str, deployment_id: str,
                            who: Caller = Depends(caller)) -> None:
    model = _name_of(request, who, "models", model_instance_id)
    body = await _body(request)
    scaling = {k: v for k, v in body.items() if k in _SCALING}
    vc = body.get("vendor_configuration")
    if isinstance(vc, dict):
        scaling.update({k: v for k, v in vc.items() if k in _SCALING})
    commands, _ = _set_commands(request, "models", model, scaling, example=("min_workers", "<n>"))
    raise _refuse(request, "Updating a deployment", config_path("models", model), commands)


@router.delete("/v4/models/{model_instance_id}/deployments/{deployment_id}", status_code=405,
               summary="Delete a deployment (405: edit stack config)")
async def delete_deployment(request: Request, model_instance_id: str, deployment_id: str,
                            who: Caller = Depends(caller)) -> None:
    path = config_path("models", _name_of(request, who, "models", model_instance_id))
    raise _refuse(request, "Deleting a deployment", path, [_config_rm(request, path)])
