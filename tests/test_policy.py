"""The CrossGuard pack's checks on the planner's manifests: the example stacks pass, mutations fail."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from catalog_fixtures import ROOT, STACKS
from sgp_infra.catalog import Catalog, build_catalog, load_file, raw_from_stack_doc, read_stack_file
from sgp_infra.plan import plan_catalog

sys.path.insert(0, str(ROOT / "policy"))

import sgp_pack  # noqa: E402
import sgp_policies as checks  # noqa: E402

Manifest = dict[str, Any]


def plan_api_or_none() -> Callable[[Catalog], list[Manifest]] | None:
    try:
        from sgp_infra.plan.api import plan_api
    except ImportError:
        return None
    return plan_api


def manifests_of(catalog: Catalog) -> list[Manifest]:
    out = copy.deepcopy(plan_catalog(catalog).manifests)
    plan_api = plan_api_or_none()
    if plan_api is not None:
        out += copy.deepcopy(plan_api(catalog))
    return out


def stack(name: str, **settings: Any) -> Catalog:
    raw = raw_from_stack_doc(read_stack_file(ROOT / "stacks" / f"Pulumi.{name}.yaml"))
    raw.update(settings)
    return build_catalog(raw)


def deployment(manifests: list[Manifest], name: str) -> Manifest:
    return next(m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == name)


def scaler(manifests: list[Manifest], name: str) -> Manifest:
    return next(m for m in manifests if m["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
                and m["metadata"]["name"] == name)


def container(manifest: Manifest) -> Manifest:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def mandatory(manifests: list[Manifest]) -> list[str]:
    return [p for m in manifests for check in checks.MANDATORY_CHECKS for p in check(m)]


# -- the example stacks pass ------------------------------------------------


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
def test_example_stacks_pass_every_check(path: Path) -> None:
    catalog = load_file(path)
    manifests = manifests_of(catalog)
    assert mandatory(manifests) == []
    assert checks.check_high_priority_min_workers(manifests) == []
    quota = {gpu: hi for gpu, (_lo, hi) in catalog.gpu_totals().items()}
    assert checks.check_gpu_quota(manifests, quota) == []


@pytest.mark.parametrize("profile", ["eks", "gke", "karpenter", "nfd"])
def test_every_gpu_profile_passes_and_counts_like_the_catalogue(profile: str) -> None:
    name = "dev" if profile in ("gke", "karpenter") else "prod"  # prod has types GKE/Karpenter cannot place
    catalog = stack(name, gpuProfile=profile)
    manifests = manifests_of(catalog)
    assert mandatory(manifests) == []
    # the policy's GPU arithmetic from manifests agrees with the catalogue's own
    assert checks.gpu_totals_at_max(manifests) == {gpu: hi for gpu, (_lo, hi) in catalog.gpu_totals().items() if hi}


# -- mandatory: bad cases -----------------------------------------------------


@pytest.fixture
def prod() -> list[Manifest]:
    return manifests_of(stack("prod"))


@pytest.mark.parametrize("resource", ["cpu", "memory"])
def test_missing_limit_is_a_violation(prod: list[Manifest], resource: str) -> None:
    dep = deployment(prod, "mistral-7b")
    del container(dep)["resources"]["limits"][resource]
    (problem,) = checks.check_resource_limits(dep)
    assert f"no {resource} limit" in problem and "mistral-7b" in problem


def test_no_resources_at_all_is_a_violation(prod: list[Manifest]) -> None:
    dep = deployment(prod, "bge-reranker")
    del container(dep)["resources"]
    assert checks.check_resource_limits(dep)


def test_gpu_without_node_selector_is_a_violation(prod: list[Manifest]) -> None:
    dep = deployment(prod, "llama-3-70b-instruct")
    del dep["spec"]["template"]["spec"]["nodeSelector"]
    (problem,) = checks.check_gpu_node_selector(dep)
    assert "nvidia.com/gpu" in problem and "nodeSelector" in problem


def test_gpu_node_selector_without_gpu_is_a_violation() -> None:
    dev = manifests_of(stack("dev"))
    echo = deployment(dev, "echo")  # a CPU model
    echo["spec"]["template"]["spec"]["nodeSelector"] = {checks.EKS_KEY: "nvidia-tesla-t4"}
    (problem,) = checks.check_gpu_node_selector(echo)
    assert "asks for no GPU" in problem


def test_mig_slice_must_match_the_selected_slice(prod: list[Manifest]) -> None:
    dep = deployment(prod, "llama-3-2-1b")  # nvidia-hopper-h100-1g20gb
    resources = container(dep)["resources"]
    for part in ("requests", "limits"):
        resources[part]["nvidia.com/mig-3g.40gb"] = resources[part].pop("nvidia.com/gpu")
    assert any("MIG slice nvidia.com/mig-3g.40gb" in p for p in checks.check_gpu_node_selector(dep))


def test_gke_partition_must_match_the_mig_resource() -> None:
    dep = deployment(manifests_of(stack("prod", gpuProfile="nfd")), "llama-3-2-1b")  # nvidia.com/mig-1g.20gb
    dep["spec"]["template"]["spec"]["nodeSelector"][checks.GKE_PARTITION_KEY] = "3g.40gb"
    assert any("partition" in p for p in checks.check_gpu_node_selector(dep))


def test_gpu_request_must_equal_limit(prod: list[Manifest]) -> None:
    dep = deployment(prod, "llama-3-70b-instruct")
    container(dep)["resources"]["requests"]["nvidia.com/gpu"] = "4"
    assert any("must equal limits" in p for p in checks.check_gpu_node_selector(dep))


def test_custom_gpu_label_keys_are_honoured(prod: list[Manifest]) -> None:
    dep = deployment(prod, "llama-3-70b-instruct")
    dep["spec"]["template"]["spec"]["nodeSelector"] = {"example.com/gpu": "h100"}
    assert checks.check_gpu_node_selector(dep)
    assert checks.check_gpu_node_selector(dep, ("example.com/gpu",)) == []


@pytest.mark.parametrize("image, ok", [
    ("ghcr.io/acme/vllm-server:0.6.3", True),
    ("ghcr.io/acme/vllm-server@sha256:" + "a" * 64, True),
    ("localhost:5000/server:1.0", True),
    ("ghcr.io/acme/vllm-server:latest", False),
    ("ghcr.io/acme/vllm-server", False),
    ("localhost:5000/server", False),
    ("ghcr.io/acme/vllm-server@sha256:abc", False),
    ("", False),
])
def test_images_must_be_pinned(prod: list[Manifest], image: str, ok: bool) -> None:
    dep = deployment(prod, "mistral-7b")
    container(dep)["image"] = image
    assert (checks.check_image_pinned(dep) == []) is ok


def api_deployment(manifests: list[Manifest]) -> Manifest:
    api = [m for m in manifests if checks.is_api_workload(m)]
    if not api:
        pytest.skip("the planner does not plan the API yet")
    return api[0]


def test_planned_api_pods_are_restricted(prod: list[Manifest]) -> None:
    assert checks.check_api_restricted(api_deployment(prod)) == []


@pytest.mark.parametrize("mutate, needle", [
    (lambda pod, c: c["securityContext"].update(runAsNonRoot=False) or pod.get("securityContext", {}).pop(
        "runAsNonRoot", None), "runAsNonRoot"),
    (lambda pod, c: c["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
    (lambda pod, c: c["securityContext"].update(privileged=True), "privileged"),
    (lambda pod, c: c["securityContext"].update(capabilities={"drop": ["NET_RAW"]}), "drop must include ALL"),
    (lambda pod, c: c["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "SYS_ADMIN"),
    (lambda pod, c: c["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
    (lambda pod, c: c["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccompProfile"),
    (lambda pod, c: pod.update(hostNetwork=True), "hostNetwork"),
    (lambda pod, c: pod.setdefault("volumes", []).append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
])
def test_api_pods_that_break_the_restricted_profile(prod: list[Manifest], mutate: Any, needle: str) -> None:
    api = api_deployment(prod)
    pod = api["spec"]["template"]["spec"]
    c = pod["containers"][0]
    c.setdefault("securityContext", {}).setdefault("capabilities", {"drop": ["ALL"]})
    mutate(pod, c)
    assert any(needle in p for p in checks.check_api_restricted(api))


def test_model_pods_are_not_held_to_the_api_profile(prod: list[Manifest]) -> None:
    dep = deployment(prod, "mistral-7b")  # model servers may need a writable root (caches)
    assert not checks.is_api_workload(dep) and checks.check_api_restricted(dep) == []


# -- advisory -------------------------------------------------------------------


def test_gpu_quota_at_max_scale(prod: list[Manifest]) -> None:
    totals = checks.gpu_totals_at_max(prod)
    assert totals["nvidia-hopper-h100"] == 16 and totals["nvidia-hopper-h100-1g20gb"] == 6
    assert checks.check_gpu_quota(prod, None) == []
    (problem,) = checks.check_gpu_quota(prod, {"nvidia-hopper-h100": 8, "nvidia-tesla-t4": 100})
    assert "nvidia-hopper-h100: 16 GPUs at max scale exceed this stack's quota of 8" in problem


def test_gpu_quota_follows_max_workers(prod: list[Manifest]) -> None:
    scaler(prod, "llama-3-70b-instruct")["spec"]["maxReplicaCount"] = 3
    assert checks.gpu_totals_at_max(prod)["nvidia-hopper-h100"] == 24


def test_gpu_quota_from_the_published_catalogue(prod: list[Manifest]) -> None:
    configmaps = [m for m in prod if m["kind"] == "ConfigMap" and m["metadata"]["name"] == checks.CATALOG_CONFIGMAP]
    if not configmaps:
        pytest.skip("the planner does not publish the catalogue yet")
    assert checks.quota_from_catalog(prod) is None
    withquota = manifests_of(stack("prod", gpuQuota={"nvidia-hopper-h100": 8}))
    assert checks.quota_from_catalog(withquota) == {"nvidia-hopper-h100": 8}


def test_high_priority_model_scaling_to_zero_is_reported() -> None:
    raw = raw_from_stack_doc(read_stack_file(ROOT / "stacks" / "Pulumi.prod.yaml"))
    raw["models"]["qwen-72b-chat"]["vendor_configuration"]["model_infra"]["min_workers"] = 0
    manifests = manifests_of(build_catalog(raw))
    (problem,) = checks.check_high_priority_min_workers(manifests)
    assert "qwen-72b-chat" in problem and "min_workers >= 1" in problem


def test_high_priority_under_hpa_and_fixed_replicas(prod: list[Manifest]) -> None:
    dep = deployment(prod, "qwen-72b-chat")
    hpa = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "x", "namespace": dep["metadata"]["namespace"]},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "qwen-72b-chat"}, "minReplicas": 1,
                    "maxReplicas": 2}}
    assert checks.check_high_priority_min_workers([dep, hpa]) == []
    fixed = copy.deepcopy(dep)
    fixed["spec"]["replicas"] = 0
    assert checks.check_high_priority_min_workers([fixed])


# -- the Pulumi adapter -------------------------------------------------------


def test_manifest_of_pulumi_type_tokens() -> None:
    assert checks.manifest_of("kubernetes:apps/v1:Deployment", {"metadata": {"name": "a"}}) == {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}}
    assert checks.manifest_of("kubernetes:core/v1:Service", {})["apiVersion"] == "v1"
    assert checks.manifest_of("kubernetes:keda.sh/v1alpha1:ScaledObject",
                              {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject"})["kind"] == "ScaledObject"
    assert checks.manifest_of("kubernetes:index:Provider", {}) is None
    assert checks.manifest_of("sgp-infra:index:ModelEndpoint", {}) is None


def props_of(manifest: Manifest) -> tuple[str, dict[str, Any]]:
    group_version = manifest["apiVersion"] if "/" in manifest["apiVersion"] else "core/" + manifest["apiVersion"]
    return f"kubernetes:{group_version}:{manifest['kind']}", {k: v for k, v in manifest.items()
                                                              if k not in ("apiVersion", "kind")}


def test_pack_policies_report_through_crossguard(prod: list[Manifest]) -> None:
    from pulumi_policy import EnforcementLevel, PolicyResource, ResourceValidationArgs, StackValidationArgs

    policies = {p.name: p for p in sgp_pack.POLICIES}
    assert {n for n, p in policies.items() if p.enforcement_level == EnforcementLevel.MANDATORY} == {
        "resource-limits", "gpu-node-selector", "images-pinned", "api-restricted-pods"}
    assert {n for n, p in policies.items() if p.enforcement_level == EnforcementLevel.ADVISORY} == {
        "gpu-quota", "high-priority-keeps-a-worker", "async-scale-to-zero-has-a-task-limit"}

    dep = deployment(prod, "mistral-7b")
    container(dep)["image"] = "ghcr.io/acme/vllm-server:latest"
    rtype, props = props_of(dep)
    reported: list[str] = []
    args = ResourceValidationArgs(rtype, props, "urn:x", "mistral-7b", None, None, {})  # type: ignore[arg-type]
    policies["images-pinned"].validate(args, lambda message, urn=None: reported.append(message))
    assert len(reported) == 1 and "latest" in reported[0]

    resources = [PolicyResource(*props_of(m), "urn:" + m["metadata"]["name"], m["metadata"]["name"],
                                None, None, None, [], {}) for m in prod]  # type: ignore[arg-type]
    reported.clear()
    policies["gpu-quota"].validate(StackValidationArgs(resources, {"gpuQuota": {"nvidia-ampere-a100e": 4}}),
                                   lambda message, urn=None: reported.append(message))
    assert reported and "nvidia-ampere-a100e: 8 GPUs" in reported[0]
    reported.clear()
    policies["high-priority-keeps-a-worker"].validate(StackValidationArgs(resources, {}),
                                                      lambda message, urn=None: reported.append(message))
    assert reported == []


def test_pack_files_are_present() -> None:
    text = (ROOT / "policy" / "PulumiPolicy.yaml").read_text()
    assert "runtime" in text and "python" in text
    assert "pulumi-policy" in (ROOT / "policy" / "requirements.txt").read_text()
    assert "PolicyPack(" in (ROOT / "policy" / "__main__.py").read_text()


def test_async_model_at_zero_without_a_task_limit_is_reported() -> None:
    raw = raw_from_stack_doc(read_stack_file(ROOT / "stacks" / "Pulumi.dev.yaml"))
    assert checks.check_async_task_limit(manifests_of(build_catalog(copy.deepcopy(raw)))) == []
    del raw["models"]["transcriber"]["async_tasks"]["task_timeout_seconds"]
    (problem,) = checks.check_async_task_limit(manifests_of(build_catalog(copy.deepcopy(raw))))
    assert "'transcriber'" in problem and "task_timeout_seconds" in problem
    raw["models"]["transcriber"]["vendor_configuration"]["model_infra"]["min_workers"] = 1
    assert checks.check_async_task_limit(manifests_of(build_catalog(copy.deepcopy(raw)))) == []
    # v4: the template makes it ASYNC and may carry the limit for its models
    raw = raw_from_stack_doc(read_stack_file(ROOT / "stacks" / "Pulumi.dev.yaml"))
    tpl = raw["templates"]["echo-cpu"]
    tpl["endpoint_type"] = "ASYNC"
    tpl["vendor_configuration"]["endpoint_config"]["min_workers"] = 0
    assert [p for p in checks.check_async_task_limit(manifests_of(build_catalog(copy.deepcopy(raw))))
            if "'echo'" in p]
    tpl["async_tasks"] = {"task_timeout_seconds": 60}
    assert not [p for p in checks.check_async_task_limit(manifests_of(build_catalog(copy.deepcopy(raw))))
                if "'echo'" in p]
