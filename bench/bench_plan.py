"""Benchmark: what planning and validation add on top of Pulumi and libyaml.

Not a test (nothing here asserts timing).  Run from the repository root:

    venv/bin/python bench/bench_plan.py            # 10, 100, 1000 models
    venv/bin/python bench/bench_plan.py --sizes 10 100 --repeat 5

Method.  Both measurements compare the library with the program or script a
person would write by hand to produce the same result, in the same process,
on the same synthetic catalogue (half v4 models from three templates, half
v5, mixed GPUs):

1. Program evaluation under Pulumi mocks.  The library side is
   ``__main__.py`` run as Pulumi runs it (``runpy``): read the stack config,
   validate, plan, then ModelCatalog → ModelEndpoint → Kubernetes resources,
   and CatalogApi.  The bare side is the same resource tree written out by
   hand with pulumi_kubernetes calls: the same component nodes
   (``sgp-infra:index:*`` types and names), the same Kubernetes objects with
   the same inputs, parents, dependencies on the Namespace, custom timeouts,
   component outputs and stack exports, and the same warning about the
   missing API keys.  What a hand-written program would hard-code (each
   model's image, resources, routes…; the API's objects including the
   published catalogue) is resolved before timing, so the bare side does no
   validation, planning or YAML.  Before timing, the script checks that both
   register identical resources (type, name and inputs of every resource).
   The gap is what sgp-infra itself adds on top of the Pulumi SDK's own
   registration work.
2. ``render`` of 1,000 models, run through the CLI entry point (read the
   stack file, validate, plan, write one file per object) against dumping the
   same manifest dicts to the same file names with ``yaml.CSafeDumper``
   (planned before timing).  Before timing, the script checks that both write
   byte-identical files.

Each timed run is a fresh Python process, as ``pulumi up`` and ``render``
are: the parent starts one child per run, alternating library and bare so
background load hits both alike.  A child imports the same modules whichever
side it runs (pulumi, pulumi_kubernetes, sgp_infra), prepares its side's
inputs, collects garbage, and times exactly one run of its side.  Times are
CPU seconds of the child (``time.process_time``), not wall time: this is a
2-core shared VM, and CPU time leaves out the moments another process holds
the core.  Each figure is the median over ``--repeat`` runs (at least 9 for
10 models, 7 for 100, 5 for render), and the spread of the per-pair ratios
is printed beside it.

The library's program and ``render`` freeze the heap once the catalogue is
planned (``sgp_infra/heap.py``); a third column, "library, no freeze", runs
the same program with that call patched out, to show what it is worth.
Ratios are library / bare; targets: ≤ 1.10× and ≤ 1.25×.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pulumi
import pulumi_kubernetes as k8s
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgp_infra.catalog import build_catalog, load_file  # noqa: E402
from sgp_infra.cli import main as cli_main  # noqa: E402
from sgp_infra.cli.render import file_name  # noqa: E402
from sgp_infra.components.resources import TYPED  # noqa: E402
from sgp_infra.plan import plan_catalog  # noqa: E402
from sgp_infra.plan.api import plan_api  # noqa: E402

#: Top-level manifest fields → pulumi_kubernetes keyword arguments.
SNAKE = {"stringData": "string_data", "binaryData": "binary_data", "roleRef": "role_ref"}

GPU_CYCLE = ["nvidia-tesla-t4", "nvidia-ampere-a10", "nvidia-ampere-a100", "nvidia-hopper-h100",
             "nvidia-hopper-h100-1g20gb", None]


# --- a synthetic catalogue of n models -------------------------------------------------------

def synthetic_config(n: int) -> dict[str, Any]:
    """``sgp-infra:*`` config with n models: half v4 (from 3 templates), half v5, mixed GPUs."""
    templates = {}
    for i, gpu in enumerate(["nvidia-tesla-t4", "nvidia-ampere-a100", None]):
        templates[f"tpl-{i}"] = {
            "endpoint_type": "STREAMING" if i == 1 else "SYNC",
            "model_type": "COMPLETION",
            "vendor_configuration": {
                "bundle_config": {
                    "registry": "ghcr.io/acme", "image": "server", "tag": "1.0",
                    "command": ["serve", "--weights", "${weights}"],
                    "streaming_command": ["serve", "--stream", "--weights", "${weights}"],
                    "env": {"WEIGHTS": "${weights}", "LOG": "info"},
                    "readiness_initial_delay_seconds": 300,
                },
                "endpoint_config": {"cpus": 4, "memory": "16Gi", "gpus": 1 if gpu else 0,
                                    **({"gpu_type": gpu} if gpu else {}),
                                    "min_workers": i % 2, "max_workers": 3, "per_worker": 8},
            },
            "model_creation_parameters_schema": {
                "parameters": [{"name": "weights", "type": "str", "description": "w", "required": True}]},
        }
    models: dict[str, Any] = {}
    for i in range(n):
        name = f"model-{i:04d}"
        if i % 2:
            models[name] = {"model_type": "COMPLETION", "model_template_id": f"tpl-{i % 3}",
                            "model_creation_parameters": {"weights": f"s3://weights/{name}"}}
        else:
            gpu = GPU_CYCLE[i % len(GPU_CYCLE)]
            models[name] = {"model_type": "generic", "model_vendor": "launch", "vendor_configuration": {
                "model_image": {"registry": "ghcr.io/acme", "repository": "reranker", "tag": "1.2",
                                "command": ["serve", "--port", "5005"], "env_vars": {"MODEL": name}},
                "model_infra": {"cpus": 2, "memory": "8Gi", "gpus": 1 if gpu else 0,
                                **({"gpu_type": gpu} if gpu else {}), "min_workers": 0,
                                "max_workers": 1 + i % 3, "per_worker": 4, "endpoint_type": "sync",
                                "high_priority": i % 10 == 0, "labels": {"team": "search"}}}}
    return {"accountId": "bench", "namespace": "bench", "gpuProfile": "eks",
            "templates": templates, "models": models}


# --- Pulumi mocks -----------------------------------------------------------------------------

QUIET = logging.getLogger("sgp-infra-bench")
QUIET.setLevel(logging.ERROR)


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registered: list[tuple[str, str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.registered.append((args.typ, args.name, args.inputs))
        return f"{args.name}-id", args.inputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def run_under_mocks(program: Callable[[], None], config: dict[str, str]) -> tuple[float, Mocks]:
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="sgp-infra", stack="bench", preview=False, logger=QUIET)
    pulumi.runtime.set_all_config(config)

    @pulumi.runtime.test
    def wrapped() -> pulumi.Output[int]:
        program()
        return pulumi.Output.from_input(0)

    gc.collect()
    start = time.process_time()
    wrapped()
    return time.process_time() - start, mocks


def library_program() -> None:
    runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")


def as_script(program: Callable[[], None]) -> Callable[[], None]:
    """Run ``program`` through ``runpy`` like ``__main__.py``.

    Pulumi records each resource's source position by walking the Python
    stack, so the stack depth at registration is part of the cost: both sides
    enter through ``runpy.run_path`` to keep the comparison to the programs.
    """
    entry = Path(tempfile.mkdtemp(prefix="sgp-bench-entry-")) / "bare_main.py"
    entry.write_text("program()  # noqa: F821 - given by runpy's init_globals\n")

    def run() -> None:
        runpy.run_path(str(entry), init_globals={"program": program}, run_name="__main__")
    return run


# --- the bare program: the same tree, by hand ------------------------------------------------

class Component(pulumi.ComponentResource):
    def __init__(self, type_: str, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(type_, name, None, opts)


def bare_rows(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """What a hand-written program would hard-code per model (resolved outside the timing)."""
    catalog = build_catalog(raw)
    rows = []
    for name in sorted(catalog.models):
        m = catalog.models[name]
        rows.append({
            "name": m.object_name, "sgp_name": m.name, "id": m.id, "image": m.image,
            "command": list(m.streaming_command if m.streaming and m.streaming_command else m.command),
            "env": dict(m.env), "cpu": str(m.cpus), "memory": m.memory, "storage": m.storage, "gpus": m.gpus,
            "gpu_type": m.gpu_type, "min": m.min_workers, "max": m.max_workers, "per_worker": m.per_worker,
            "delay": m.readiness_initial_delay_seconds, "health": m.healthcheck_route,
            "predict": m.predict_route, "stream_route": m.streaming_predict_route if m.streaming else None,
            "endpoint_type": m.endpoint_type, "protocol": m.endpoint_protocol, "high": m.high_priority,
            "template": m.template.name if m.template else None, "extra_labels": dict(m.labels),
        })
    return rows


def bare_program(rows: list[dict[str, Any]], namespace: str, prometheus: str,
                 summary: dict[str, Any], api_objects: list[dict[str, Any]], api_checksum: str) -> Callable[[], None]:
    def program() -> None:
        root = Component("sgp-infra:index:ModelCatalog", "sgp-infra")
        stack_labels = {"app.kubernetes.io/part-of": "sgp-infra", "app.kubernetes.io/managed-by": "pulumi"}
        ns = k8s.core.v1.Namespace("sgp-infra-namespace-" + namespace, metadata={
            "name": namespace, "labels": {**stack_labels, "pod-security.kubernetes.io/enforce": "baseline",
                                          "pod-security.kubernetes.io/warn": "restricted"}},
            opts=pulumi.ResourceOptions(parent=root))
        if any(r["high"] for r in rows):
            k8s.scheduling.v1.PriorityClass(
                "sgp-infra-priorityclass-sgp-infra-high-priority",
                metadata={"name": "sgp-infra-high-priority", "labels": dict(stack_labels)}, value=1000000,
                global_default=False, preemption_policy="PreemptLowerPriority",
                description="sgp-infra models marked high_priority: scheduled first, may preempt other pods",
                opts=pulumi.ResourceOptions(parent=root, depends_on=[ns]))
        k8s.networking.v1.NetworkPolicy(
            "sgp-infra-networkpolicy-sgp-infra-models",
            metadata={"name": "sgp-infra-models", "namespace": namespace, "labels": dict(stack_labels)},
            spec={"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "sgp-infra",
                                                  "app.kubernetes.io/component": "model"}},
                  "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": {"matchLabels": {
                      "app.kubernetes.io/part-of": "sgp-infra", "app.kubernetes.io/component": "api"}}}],
                      "ports": [{"protocol": "TCP", "port": 5005}]}]},
            opts=pulumi.ResourceOptions(parent=root, depends_on=[ns]))
        urls = {}
        for r in rows:
            n = r["name"]
            ep = Component("sgp-infra:index:ModelEndpoint", f"sgp-infra-{n}", pulumi.ResourceOptions(parent=root))
            child = pulumi.ResourceOptions(parent=ep, depends_on=[ns])
            labels = {**r["extra_labels"], "app.kubernetes.io/name": n, "app.kubernetes.io/instance": n,
                      "app.kubernetes.io/component": "model", "app.kubernetes.io/part-of": "sgp-infra",
                      "app.kubernetes.io/managed-by": "pulumi", "sgp-infra.io/model-name": n,
                      "sgp-infra.io/model-id": r["id"]}
            if r["template"]:
                labels["sgp-infra.io/template"] = r["template"]
            annotations = {"sgp-infra.io/sgp-name": r["sgp_name"], "sgp-infra.io/endpoint-type": r["endpoint_type"],
                           "sgp-infra.io/endpoint-protocol": r["protocol"],
                           "sgp-infra.io/predict-route": r["predict"], "sgp-infra.io/healthcheck-route": r["health"]}
            if r["stream_route"]:
                annotations["sgp-infra.io/streaming-predict-route"] = r["stream_route"]
            selector = {"app.kubernetes.io/instance": n, "app.kubernetes.io/component": "model"}
            amounts = {"cpu": r["cpu"], "memory": r["memory"], "ephemeral-storage": r["storage"]}
            if r["gpus"]:
                amounts["nvidia.com/gpu"] = str(r["gpus"])
            http = {"path": r["health"], "port": "http"}
            container: dict[str, Any] = {"name": "model", "image": r["image"], "command": r["command"]}
            if r["env"]:
                container["env"] = [{"name": k, "value": v} for k, v in r["env"].items()]
            container.update({
                "ports": [{"name": "http", "containerPort": 5005, "protocol": "TCP"}],
                "resources": {"requests": dict(amounts), "limits": dict(amounts)},
                "startupProbe": {"httpGet": dict(http), "periodSeconds": 10, "timeoutSeconds": 5,
                                 "failureThreshold": -(-(r["delay"] + max(1800, r["delay"])) // 10)},
                "readinessProbe": {"httpGet": dict(http), "initialDelaySeconds": r["delay"], "periodSeconds": 10,
                                   "timeoutSeconds": 5, "failureThreshold": 3},
                "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 20, "timeoutSeconds": 5,
                                  "failureThreshold": 6},
                "securityContext": {"allowPrivilegeEscalation": False, "privileged": False,
                                    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
            })
            pod: dict[str, Any] = {"automountServiceAccountToken": False, "enableServiceLinks": False,
                                   "terminationGracePeriodSeconds": 60,
                                   "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                                   "containers": [container]}
            if r["high"]:
                pod["priorityClassName"] = "sgp-infra-high-priority"
            if r["gpus"]:
                container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
                pod["nodeSelector"] = {"k8s.amazonaws.com/accelerator": r["gpu_type"]}
                pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
                pod["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
            scaled = r["max"] > r["min"]
            spec: dict[str, Any] = {} if scaled else {"replicas": r["min"]}
            spec.update({"revisionHistoryLimit": 5, "progressDeadlineSeconds": r["delay"] + 600,
                         "selector": {"matchLabels": dict(selector)},
                         "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                         "template": {"metadata": {"labels": dict(labels)}, "spec": pod}})
            timeout = f"{r['delay'] + 600}s"
            k8s.apps.v1.Deployment(f"sgp-infra-{n}-deployment", metadata={
                "name": n, "namespace": namespace, "labels": dict(labels), "annotations": dict(annotations)},
                spec=spec, opts=pulumi.ResourceOptions(
                    parent=ep, depends_on=[ns], custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout)))
            k8s.core.v1.Service(f"sgp-infra-{n}-service", metadata={
                "name": n, "namespace": namespace, "labels": dict(labels), "annotations": dict(annotations)},
                spec={"type": "ClusterIP", "selector": dict(selector),
                      "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}, opts=child)
            meta = {"name": n, "namespace": namespace, "labels": dict(labels)}
            if scaled:
                k8s.apiextensions.CustomResource(
                    f"sgp-infra-{n}-scaledobject", api_version="keda.sh/v1alpha1", kind="ScaledObject",
                    metadata=dict(meta), spec={
                        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": n},
                        "minReplicaCount": r["min"], "maxReplicaCount": r["max"], "pollingInterval": 15,
                        "cooldownPeriod": 300, "triggers": [{"type": "prometheus", "metadata": {
                            "serverAddress": prometheus,
                            "query": f'sum(sgp_infra_model_requests_in_flight{{model="{n}",namespace="{namespace}"}})',
                            "threshold": str(r["per_worker"]), "activationThreshold": "0",
                            "ignoreNullValues": "true"}}]}, opts=child)
            if r["max"] > 1:
                k8s.policy.v1.PodDisruptionBudget(f"sgp-infra-{n}-poddisruptionbudget", metadata=dict(meta),
                                                  spec={"maxUnavailable": 1,
                                                        "selector": {"matchLabels": dict(selector)}},
                                                  opts=child)
            # The same component outputs and exports as the library's program.
            url = pulumi.Output.from_input(f"http://{n}.{namespace}.svc.cluster.local")
            placement = pulumi.Output.from_input({
                "profile": "eks", "gpuType": r["gpu_type"] if r["gpus"] else None,
                "resource": "nvidia.com/gpu" if r["gpus"] else None, "count": r["gpus"],
                "nodeSelector": pod.get("nodeSelector", {}), "tolerations": pod.get("tolerations", [])})
            ep.register_outputs({"url": url, "deployment_name": pulumi.Output.from_input(n), "placement": placement})
            urls[r["sgp_name"]] = (url, placement)
        ns_name = ns.urn.apply(lambda _: namespace)
        all_urls = pulumi.Output.all(**{k: u for k, (u, _) in urls.items()})
        root.register_outputs({"namespace": ns_name, "urls": all_urls})
        # The catalogue API's objects, as literal dicts (no keys Secret: the bench sets no apiKeys).
        api = Component("sgp-infra:index:CatalogApi", "sgp-infra-api")
        pulumi.log.warn("sgp-infra:apiKeys is not set", api)
        for obj in api_objects:
            cls = TYPED[(obj["apiVersion"], obj["kind"])]
            fields = {SNAKE.get(k, k): v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
            cls(f"sgp-infra-api-{obj['kind'].lower()}", metadata=obj["metadata"],
                opts=pulumi.ResourceOptions(parent=api, depends_on=[ns]), **fields)
        api_url = pulumi.Output.from_input(f"http://sgp-infra-api.{namespace}.svc.cluster.local")
        api.register_outputs({"url": api_url, "catalog_checksum": pulumi.Output.from_input(api_checksum)})
        pulumi.export("catalog", summary)
        pulumi.export("namespace", ns_name)
        pulumi.export("modelUrls", all_urls)
        pulumi.export("apiUrl", api_url)
        pulumi.export("placements", {k: p for k, (_, p) in urls.items()})
    return program


def _normal(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def same_tree(a: Mocks, b: Mocks) -> bool:
    def key(m: Mocks) -> list[tuple[str, str, Any]]:
        return sorted(((t, n, json.dumps(_normal(i), sort_keys=True)) for t, n, i in m.registered
                       if t.startswith(("kubernetes:", "sgp-infra:"))))
    return key(a) == key(b)


# --- one timed run per child process -------------------------------------------------------

SIDES = ("library", "library-nofreeze", "bare")


def _no_freeze() -> None:
    """Patch the program's and the CLI's heap freeze out (the "no freeze" column)."""
    import sgp_infra.cli.common
    import sgp_infra.heap
    sgp_infra.heap.freeze_long_lived = lambda: None  # type: ignore[assignment]
    sgp_infra.cli.common.freeze_long_lived = lambda: None  # type: ignore[assignment]


def program_config(n: int) -> dict[str, str]:
    """The synthetic catalogue as Pulumi passes config to a program (JSON strings)."""
    return {f"sgp-infra:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in synthetic_config(n).items()}


def bare_for(n: int) -> Callable[[], None]:
    """The bare program for n models, its literals resolved (as a hand-written program hard-codes them)."""
    raw = synthetic_config(n)
    catalog = build_catalog(raw)
    summary = {
        "summary": catalog.summary(), "templates": sorted(catalog.templates),
        "models": {name: model.id for name, model in sorted(catalog.models.items())},
        "modelGroups": sorted(catalog.groups),
        "gpus": {gpu: {"min": lo, "max": hi} for gpu, (lo, hi) in catalog.gpu_totals().items()},
    }
    api_objects = plan_api(catalog, "bench")  # the stack name the mocks run under (SGP_INFRA_STACK)
    checksum = next(m for m in api_objects if m["kind"] == "Deployment")[
        "spec"]["template"]["metadata"]["annotations"]["sgp-infra.io/catalog-checksum"]
    bare = bare_program(bare_rows(raw), catalog.settings.namespace, catalog.settings.prometheus_url, summary,
                        api_objects, checksum)
    return as_script(bare)


def child_program(side: str, n: int) -> float:
    config = program_config(n)  # both sides: the bare program reads no config, but Pulumi gets the same
    if side == "bare":
        return run_under_mocks(bare_for(n), config)[0]
    if side == "library-nofreeze":
        _no_freeze()
    return run_under_mocks(library_program, config)[0]


def child_render(side: str, stack: Path, out: Path) -> float:
    if side == "bare":
        catalog = load_file(stack)
        manifests = plan_catalog(catalog).manifests + plan_api(catalog, "bench")  # planned before timing
        del catalog
        gc.collect()
        start = time.process_time()
        dump_files(manifests, out)
        return time.process_time() - start
    if side == "library-nofreeze":
        _no_freeze()
    gc.collect()
    start = time.process_time()
    with contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(["render", "--config-file", str(stack), "--out", str(out)])
    elapsed = time.process_time() - start
    if code != 0:
        raise SystemExit(f"render exited {code}")
    return elapsed


def dump_files(manifests: list[dict[str, Any]], out: Path) -> None:
    """The bare side of the render benchmark: libyaml's safe dumper, one file per object."""
    out.mkdir()
    for i, manifest in enumerate(manifests):
        with open(out / file_name(i, manifest), "w", encoding="utf-8") as handle:
            yaml.dump(manifest, handle, Dumper=yaml.CSafeDumper, sort_keys=False, default_flow_style=False)


def spawn(*args: str) -> float:
    """Run one child (``--child ...``) and return the CPU seconds it reports."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


# --- the parent: checks, then alternating children --------------------------------------------

def check_program(n: int) -> None:
    """Both sides register the same resources (type, name, inputs) for n models."""
    config = program_config(n)
    _, lib_mocks = run_under_mocks(library_program, config)
    _, bare_mocks = run_under_mocks(bare_for(n), config)
    gc.unfreeze()
    if not same_tree(lib_mocks, bare_mocks):
        raise SystemExit(f"bare program does not register the same tree as __main__.py for n={n}")


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def check_render(stack: Path, work: Path) -> None:
    """``render`` and the bare dump write byte-identical files under the same names."""
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli_main(["render", "--config-file", str(stack), "--out", str(work / "check-render")]) == 0
    gc.unfreeze()
    catalog = load_file(stack)
    dump_files(plan_catalog(catalog).manifests + plan_api(catalog, "bench"), work / "check-dump")
    if files(work / "check-render") != files(work / "check-dump"):
        raise SystemExit("render and the bare dump wrote different files (names or contents)")


def measure(repeat: int, run: Callable[[str], float]) -> dict[str, list[float]]:
    """``repeat`` rounds of one child per side, sides in turn."""
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for _ in range(repeat):
        for side in SIDES:
            times[side].append(run(side))
    return times


def report(label: str, times: dict[str, list[float]]) -> None:
    lib, nofreeze, bare = (statistics.median(times[s]) for s in SIDES)
    pairs = [a / b for a, b in zip(times["library"], times["bare"], strict=True)]
    print(f"{label:<24}{lib:>10.3f}{nofreeze:>12.3f}{bare:>9.3f}{lib / bare:>8.2f}x"
          f"{nofreeze / bare:>11.2f}x   {min(pairs):.2f}-{max(pairs):.2f}", flush=True)


def runs_for(n: int, repeat: int) -> int:
    """More runs for small programs: a 10-model run is ~0.2 s, most of it the
    Pulumi SDK and the garbage collector, so single runs swing the most."""
    if n <= 10:
        return max(repeat, 9)
    if n <= 100:
        return max(repeat, 7)
    return repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--render-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (more for small sizes)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one timed run, printed for the parent
        kind, side = args.child[0], args.child[1]
        if kind == "program":
            print(child_program(side, int(args.child[2])))
        else:
            print(child_render(side, Path(args.child[2]), Path(args.child[3])))
        return
    print(f"{'CPU s, median':<24}{'library':>10}{'no freeze':>12}{'bare':>9}{'ratio':>9}{'no freeze':>12}"
          f"   per-pair ratios")
    for n in args.sizes:
        check_program(n)
        report(f"program, {n} models", measure(runs_for(n, args.repeat),
                                               lambda side, n=n: spawn("program", side, str(n))))
    work = Path(tempfile.mkdtemp(prefix="sgp-bench-"))
    try:
        stack = work / "Pulumi.bench.yaml"
        raw = synthetic_config(args.render_size)
        stack.write_text(yaml.safe_dump({"config": {f"sgp-infra:{k}": v for k, v in raw.items()}}))
        check_render(stack, work)

        def render_once(side: str) -> float:
            out = work / f"out-{side}"
            shutil.rmtree(out, ignore_errors=True)
            return spawn("render", side, str(stack), str(out))
        report(f"render, {args.render_size} models", measure(max(args.repeat, 5), render_once))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("(ratio = library / bare, medians of CPU time; targets: program <= 1.10x, render <= 1.25x)")


if __name__ == "__main__":
    main()
