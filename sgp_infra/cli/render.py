"""``render``: a stack's Kubernetes manifests as YAML, with no Pulumi and no cluster.

The manifests are the planner's, the very dicts the Pulumi components
register, so reviewing the rendered files is reviewing what ``pulumi up``
will apply.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import IO, Any, Iterable

import yaml

from ..catalog import Catalog
from .common import EXIT_USAGE, add_source_args, try_load_planned

HELP = "write a stack's Kubernetes manifests as YAML: one file per object, or one stream with --out -"

DESCRIPTION = """\
Validates the stack's catalogue, plans its Kubernetes objects (namespace,
priority classes, network policy; per model a Deployment, Service, KEDA
ScaledObject or HPA, PodDisruptionBudget) and writes them as YAML: exactly the
objects and fields `pulumi up` registers.

--out DIR writes one file per object, named NNN-<kind>-<name>.yaml in apply
order (kubectl apply -f DIR applies them in that order). --out - writes one
multi-document stream to stdout. An invalid catalogue prints every problem
with its config path, exits 1 and writes nothing. Files in DIR that an
earlier render wrote (NNN-<kind>-<name>.yaml) and this one did not are
removed, so DIR holds exactly the current objects; other files are left alone.

Secrets are never rendered: the API keys Secret and the Secrets of
sgp-infra:modelSecrets that models list (secrets: [<name>]) are created by
`pulumi up` from Pulumi secret config. The model Deployments reference them
(envFrom sgp-infra-model-secret-<name>), and a note on stderr names them. With
sgp-infra:async.natsUrl, the API and ASYNC forwarders read SGP_INFRA_NATS_*
from the Secret sgp-infra-nats-credentials (sgp-infra:natsCredentials), which
is not rendered either.

examples:
  python -m sgp_infra render --stack dev --out rendered/dev
  python -m sgp_infra render --config-file stacks/Pulumi.prod.yaml --out - | kubectl apply --dry-run=client -f -
"""

_BASE_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


_STR, _INT, _BOOL, _NULL = ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool",
                             "tag:yaml.org,2002:null")
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
#: (value, implicit) → resolved tag, shared by every dump: manifests repeat the
#: same keys and values thousands of times.  Bounded; cleared when full.
_RESOLVED: dict[tuple[str, Any], str] = {}
_RESOLVED_MAX = 1 << 16


class Dumper(_BASE_DUMPER):  # type: ignore[misc, valid-type]
    """libyaml's safe dumper, never emitting anchors/aliases (kubectl-friendly).

    Planned manifests are plain JSON-like trees (dict, list, str, int, bool,
    None), so those types are represented directly rather than through
    PyYAML's per-node type dispatch and alias bookkeeping, and the resolver's
    regex checks on each scalar (libyaml asks twice per scalar whether it
    needs quoting) are memoised.  The nodes, hence the YAML text, are exactly
    what the safe representer makes with ``default_flow_style=False``;
    anything else (floats, other types or styles) takes the stock path.
    """

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_data(self, data: Any) -> Any:
        kind = type(data)
        if kind is str:
            return yaml.ScalarNode(_STR, data, style=self.default_style)
        if self.default_flow_style is not False or self.default_style is not None:
            return super().represent_data(data)
        if kind is dict:
            if self.sort_keys:
                return super().represent_data(data)
            represent = self.represent_data
            return yaml.MappingNode(_MAP, [(represent(k), represent(v)) for k, v in data.items()],
                                    flow_style=False)
        if kind is list:
            represent = self.represent_data
            return yaml.SequenceNode(_SEQ, [represent(item) for item in data], flow_style=False)
        if kind is int:
            return yaml.ScalarNode(_INT, str(data))
        if kind is bool:
            return yaml.ScalarNode(_BOOL, "true" if data else "false")
        if data is None:
            return yaml.ScalarNode(_NULL, "null")
        return super().represent_data(data)

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = _RESOLVED.get(key)
        if tag is None:
            if len(_RESOLVED) >= _RESOLVED_MAX:
                _RESOLVED.clear()
            tag = _RESOLVED[key] = super().resolve(kind, value, implicit)
        return tag


def dump(manifest: dict[str, Any], stream: IO[str] | None = None) -> Any:
    return yaml.dump(manifest, stream, Dumper=Dumper, sort_keys=False, default_flow_style=False)


def file_name(index: int, manifest: dict[str, Any]) -> str:
    return f"{index:03d}-{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"


#: The names :func:`file_name` gives: only such files are ever removed from ``--out``.
RENDERED = re.compile(r"\d{3,}-[a-z0-9]+-[a-z0-9][a-z0-9.-]*\.yaml")


def write_dir(manifests: Iterable[dict[str, Any]], out: Path) -> tuple[int, int]:
    """Write one file per manifest; remove files an earlier render left for objects now gone.

    Why remove: file numbers follow apply order, so adding or removing one
    model renames the files after it, and ``kubectl apply -f DIR`` would apply
    a removed model's leftover file.  Returns ``(written, removed)``.
    """
    out.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    for index, manifest in enumerate(manifests):
        name = file_name(index, manifest)
        with open(out / name, "w", encoding="utf-8") as handle:
            dump(manifest, handle)
        written.add(name)
    removed = 0
    for path in out.iterdir():
        if path.name not in written and RENDERED.fullmatch(path.name) and path.is_file():
            path.unlink()
            removed += 1
    return len(written), removed


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("render", help=HELP, description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(parser)
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="directory to write one YAML file per object into, or - for stdout")
    parser.set_defaults(run=run)


def secrets_note(catalog: Catalog) -> str | None:
    """What the rendered Deployments need that is not rendered: the model secrets' and NATS credentials'
    Secrets, or ``None``."""
    from ..plan.secrets import model_secret_name, used_secrets

    from ..plan.nats import NATS_CREDENTIALS_SECRET, credentials_env, has_async

    notes = []
    used = used_secrets(catalog)
    if used:
        names = ", ".join(model_secret_name(s) for s in used)
        notes.append(f"note: model Deployments reference Secrets that are not rendered ({names}): `pulumi up` "
                     "creates them from the Pulumi secret sgp-infra:modelSecrets; applied without them, those "
                     "pods wait")
    if has_async(catalog) and credentials_env(catalog.settings):
        notes.append(f"note: the API and the ASYNC forwarders read NATS credentials from the Secret "
                     f"{NATS_CREDENTIALS_SECRET}, which is not rendered: `pulumi up` creates it from the Pulumi "
                     "secret sgp-infra:natsCredentials when set; without it they connect without credentials")
    return "\n".join(notes) or None


def run(args: argparse.Namespace) -> int:
    catalog, manifests, code = try_load_planned(args)
    if catalog is None:
        return code
    note = secrets_note(catalog)
    if note:
        print(note, file=sys.stderr)
    if args.out == "-":
        try:
            yaml.dump_all(manifests, sys.stdout, Dumper=Dumper, sort_keys=False, default_flow_style=False)
            sys.stdout.flush()
        except BrokenPipeError:  # `render --out - | head`: main() ends quietly
            raise
        except OSError as exc:  # e.g. stdout redirected to a full disk
            print(f"error: cannot write to stdout: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        return 0
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} exists and is not a directory; name a directory or use --out -",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        count, removed = write_dir(manifests, out)
    except OSError as exc:
        print(f"error: cannot write to {out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    plural = "s" if removed != 1 else ""
    stale = f" (removed {removed} stale file{plural} of objects no longer planned)" if removed else ""
    print(f"wrote {count} manifests to {out}{stale}", file=sys.stderr)
    return 0
