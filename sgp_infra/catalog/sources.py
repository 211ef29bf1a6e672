"""Where a catalogue's raw config comes from: a stack file or Pulumi's config.

Both loaders produce the same ``{key: value}`` map of the ``sgp-infra``
namespace, which :func:`build_catalog` validates, so ``pulumi up`` and the CLI
see the same catalogue.  Secret keys are skipped here: their values never enter
the catalogue.  Secrets are accepted only there: a secret key in clear, or a
secret under any other key (which would be published in plain text), is a
config error naming its path.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

import yaml

from .build import build_catalog
from .errors import NAMESPACE, CatalogInvalid, ConfigError, config_path
from .model import Catalog
from .nats_credentials import NATS_CREDENTIALS_KEY, credentials_without_url
from .secrets import MODEL_SECRETS_HINT, MODEL_SECRETS_KEY
from .settings import SECRET_HINTS, SECRET_KEYS

PREFIX = NAMESPACE + ":"
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _construct_unique_map(loader: Any, node: yaml.MappingNode) -> Any:
    """A mapping as the safe loader builds it, refusing a key written twice.

    YAML's last-one-wins would let a pasted model block under an existing name
    silently replace the first one, and Pulumi's own YAML reader rejects the
    file, so ``validate`` would pass a stack ``pulumi up`` refuses.
    """
    seen: dict[str, yaml.Node] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            first = seen.setdefault(key_node.value, key_node)
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key_node.value}' is written twice (first at line "
                    f"{first.start_mark.line + 1}); remove or rename one", key_node.start_mark)
    return loader.construct_yaml_map(node)  # a generator, as the safe loader's own map constructor


class UniqueKeyLoader(_SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader (libyaml's when built in) with duplicate mapping keys as errors."""


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:map", _construct_unique_map)


class SourceError(Exception):
    """The config could not be read at all (missing file, broken YAML)."""


def project_root(start: Optional[Path] = None) -> Path:
    """The directory holding ``Pulumi.yaml``, searching upward; else ``start``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Pulumi.yaml").is_file():
            return candidate
    return here


def stack_file(stack: str, root: Optional[Path] = None) -> Path:
    """``stacks/Pulumi.<stack>.yaml`` of the project (``stackConfigDir: stacks``)."""
    return project_root(root) / "stacks" / f"Pulumi.{stack}.yaml"


def stack_name_of(path: str | Path) -> Optional[str]:
    """The stack a config file belongs to by Pulumi's naming (``Pulumi.<stack>.yaml``), else ``None``."""
    name = Path(path).name
    for suffix in (".yaml", ".yml"):
        if name.startswith("Pulumi.") and name.endswith(suffix) and len(name) > len("Pulumi.") + len(suffix):
            return name[len("Pulumi."):-len(suffix)]
    return None


def read_stack_file(path: Path) -> dict[str, Any]:
    """The parsed document of a stack config file.

    YAML, as Pulumi writes it; a ``.json`` file is read as JSON, which is how
    the catalogue is published to the API (ConfigMap key ``catalog.json``).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(f"{path}: no such stack config file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read it ({exc.strerror})") from None
    if Path(path).suffix == ".json":
        try:
            doc = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise SourceError(f"{path}: not valid JSON: {exc}") from None
    else:
        try:
            # libyaml's loader when built in: same results as safe_load, ~10x faster
            # on a catalogue of a thousand models.
            doc = yaml.load(text, Loader=UniqueKeyLoader) or {}
        except yaml.YAMLError as exc:
            raise SourceError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(doc, dict):
        raise SourceError(f"{path}: a stack config file is a map with a 'config' key")
    if not isinstance(doc.get("config") or {}, Mapping):
        raise SourceError(f"{path}: the stack file's 'config' must be a map of keys such as sgp-infra:accountId")
    return doc


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as ``line L, column C: problem (context)``, with the file's own line numbers.

    PyYAML's own text names the parsed string (``in "<unicode string>"``), not
    the file, and puts the position last; editors want ``line:column`` first.
    """
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        what = exc.problem or "parse error"
        if exc.context:
            what += f" ({exc.context})"
        return f"{where}: {what}"
    return str(exc)


#: Why a secret anywhere but in :data:`SECRET_KEYS` is refused.
PUBLISHED_IN_CLEAR = ("is a Pulumi secret, but sgp-infra publishes this config in plain text (the catalogue "
                      "ConfigMap, the Deployments' env and args, `render` output); only apiKeys, modelSecrets "
                      "and natsCredentials may be secrets. Put a model's token in sgp-infra:modelSecrets ("
                      + MODEL_SECRETS_HINT + ") and list its name in the template's or model's secrets "
                      "(secrets: [<name>]): its container gets the variables from a Kubernetes Secret")
#: Why a secret key given in clear is refused.
NOT_A_SECRET = "is in plain text in the stack config; set it as a secret: "


def _is_secure(value: Any) -> bool:
    """A value as Pulumi writes a secret into a stack file: ``{secure: <ciphertext>}``."""
    return isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get("secure"), str)


def _secure_paths(value: Any, path: tuple[Union[str, int], ...]) -> Iterator[tuple[Union[str, int], ...]]:
    """Where ``value`` holds secrets (``pulumi config set --secret --path`` puts them anywhere)."""
    if _is_secure(value):
        yield path
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _secure_paths(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _secure_paths(item, (*path, index))


def _secret_leaves(value: Any) -> bool:
    """A non-empty map whose every leaf is a secret: ``pulumi config set --secret --path`` per variable."""
    if _is_secure(value):
        return True
    return isinstance(value, Mapping) and bool(value) and all(_secret_leaves(v) for v in value.values())


def secret_errors(key: str, value: Any, secret: bool) -> list[ConfigError]:
    """Secrets only where a secret belongs: a secret key in clear, or a secret in published config.

    ``secret`` is whether Pulumi holds ``key`` as a secret (a stack file's
    ``{secure: …}`` values are found in ``value`` itself).  ``modelSecrets``
    may also be set variable by variable (``--secret --path
    'sgp-infra:modelSecrets.hf.HF_TOKEN'``): its names are then in clear, its
    values secret.  ``apiKeys`` may not: its keys *are* the secrets.
    """
    if key in SECRET_KEYS:
        if secret or _is_secure(value) or (key == MODEL_SECRETS_KEY and _secret_leaves(value)):
            return []
        return [ConfigError(config_path(key), NOT_A_SECRET + SECRET_HINTS[key])]
    paths = list(_secure_paths(value, (key,)))
    if secret and not paths:
        paths = [(key,)]
    return [ConfigError(config_path(*path), PUBLISHED_IN_CLEAR) for path in paths]


def raw_from_stack_doc(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``sgp-infra`` namespace of a parsed stack file, prefix stripped.

    Secret keys are left out; a secret key written in clear, or a secret
    (``{secure: …}``) anywhere else, raises :class:`CatalogInvalid`.
    """
    config = doc.get("config") or {}
    if not isinstance(config, Mapping):
        raise SourceError("the stack file's 'config' must be a map")
    out: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for full, value in config.items():
        if not (isinstance(full, str) and full.startswith(PREFIX)):
            continue
        key = full[len(PREFIX):]
        errors += secret_errors(key, value, secret=False)
        if key not in SECRET_KEYS:
            out[key] = value
    if errors:
        raise CatalogInvalid(errors)
    return out


def stray_config_keys(doc: Mapping[str, Any]) -> list[ConfigError]:
    """Config keys meant for sgp-infra that it would never read: no namespace, or a misspelt one.

    ``models:`` or ``sgp_infra:models:`` in a stack file is skipped by the
    ``sgp-infra:`` prefix match, so without this the catalogue would silently
    lose the entry (and ``accountId`` would be "required" though written).
    """
    config = doc.get("config") or {}
    return stray_keys(config if isinstance(config, Mapping) else ())


def stray_keys(keys: Iterable[Any]) -> list[ConfigError]:
    """:func:`stray_config_keys` of a plain list of config keys (a stack file's or Pulumi's)."""
    errors = []
    for key in keys:
        if not isinstance(key, str) or key.startswith(PREFIX):
            continue
        namespace, colon, name = key.partition(":")
        if not colon:
            errors.append(ConfigError(key, f"a config key needs a namespace; sgp-infra reads {PREFIX}{key}"))
        elif difflib.SequenceMatcher(None, namespace.lower(), NAMESPACE).ratio() >= 0.75:
            errors.append(ConfigError(key, f"namespace '{namespace}' is not '{NAMESPACE}'; did you mean "
                                           f"{PREFIX}{name}?"))
    return errors


def catalog_from_doc(doc: Mapping[str, Any]) -> Catalog:
    """Validate the catalogue of a parsed stack file, stray keys reported with its other problems."""
    stray = stray_config_keys(doc)
    try:
        catalog = build_catalog(raw_from_stack_doc(doc))
    except CatalogInvalid as exc:
        raise CatalogInvalid([*stray, *exc.errors]) from None
    config = doc.get("config") or {}
    late = [*stray, *credentials_without_url(PREFIX + NATS_CREDENTIALS_KEY in config,
                                             catalog.settings.async_.nats_url)]
    if late:
        raise CatalogInvalid(late)
    return catalog


def load_file(path: Path) -> Catalog:
    """Validate the catalogue in a stack config file."""
    return catalog_from_doc(read_stack_file(path))


def raw_from_pulumi() -> dict[str, Any]:
    """The ``sgp-infra`` namespace of the running Pulumi program's config.

    Pulumi hands structured values to programs as JSON text, so objects and
    arrays are decoded; scalars stay strings and the settings model coerces
    them (``"false"`` → ``False``) exactly as YAML scalars are.
    """
    from pulumi.runtime import config as runtime_config

    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    out: dict[str, Any] = {}
    errors: list[ConfigError] = []
    # The engine hands secrets over decrypted and says which keys they are: in the environment
    # for a program it runs, through set_all_config for an inline (Automation API) program.
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    for full in sorted(k for k in keys if k.startswith(PREFIX)):
        key = full[len(PREFIX):]
        errors += secret_errors(key, None, secret=full in secret_keys or runtime_config.is_config_secret(full))
        if key in SECRET_KEYS:
            continue
        value = runtime_config.get_config(full)
        if isinstance(value, str) and value[:1] in ("{", "["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise CatalogInvalid([ConfigError(full, f"is not valid JSON: {exc}")]) from None
        out[key] = value
    if errors:
        raise CatalogInvalid(errors)
    return out


def load_pulumi() -> Catalog:
    """Validate the catalogue in the running Pulumi program's stack config (stray keys included, as ``validate``)."""
    from pulumi.runtime import config as runtime_config

    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    stray = stray_keys(keys)
    try:
        catalog = build_catalog(raw_from_pulumi())
    except CatalogInvalid as exc:
        raise CatalogInvalid([*stray, *exc.errors]) from None
    late = [*stray, *credentials_without_url(PREFIX + NATS_CREDENTIALS_KEY in keys, catalog.settings.async_.nats_url)]
    if late:
        raise CatalogInvalid(late)
    return catalog


def resolve_config_file(stack: Optional[str], config_file: Optional[str]) -> Path:
    """The stack file named by the CLI's ``--stack``/``--config-file``.

    A stack name without a file is most often a typo, so the error names the
    stacks that do exist (and the closest one) rather than only the missing path.
    """
    if config_file:
        return Path(config_file)
    name = stack or os.environ.get("PULUMI_STACK")
    if not name:
        raise SourceError("name a stack with --stack NAME or a file with --config-file PATH")
    path = stack_file(name)
    if not path.exists():
        origin = "" if stack else " (from $PULUMI_STACK)"
        raise SourceError(unknown_stack_message(name, path, origin))
    return path


def unknown_stack_message(name: str, path: Path, origin: str = "") -> str:
    """Why stack ``name`` cannot be read: its missing file, the closest existing stack, the existing ones."""
    directory = path.parent
    known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in directory.glob("Pulumi.*.yaml") if p.is_file())
    message = f"no stack '{name}'{origin}: {path} does not exist"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        message += f"; did you mean --stack {close[0]}?"
    if known:
        message += f" (stacks: {', '.join(known)})"
    else:
        message += "; run inside the project (the directory holding Pulumi.yaml) or use --config-file PATH"
    return message
