"""Autoscalers (KEDA by default, HPA on request), PDBs, and the stack-wide objects."""

from __future__ import annotations

from plan_fixtures import find, plan_errors, plan_raw, raw_catalog, v4_model, v5_model

QUERY = 'sum(sgp_infra_model_requests_in_flight{model="%s",namespace="%s"})'


def test_keda_scaled_object_scales_from_zero_on_in_flight_requests() -> None:
    raw = raw_catalog()
    raw["prometheusUrl"] = "http://prom.monitoring:9090"
    raw["models"]["m5"]["vendor_configuration"]["model_infra"].update(min_workers=0, max_workers=3, per_worker=7)
    plan = plan_raw(raw)
    so = find(plan, "ScaledObject", "m5")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "m5"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 3)
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["serverAddress"] == "http://prom.monitoring:9090"
    assert trigger["metadata"]["query"] == QUERY % ("m5", plan.namespace)
    assert trigger["metadata"]["threshold"] == "7"
    assert find(plan, "HorizontalPodAutoscaler", "m5") is None
    # The autoscaler owns the replica count.
    assert "replicas" not in find(plan, "Deployment", "m5")["spec"]
    assert plan.models["m5"].autoscaler == "keda"


def test_hpa_when_chosen() -> None:
    raw = raw_catalog()
    raw["autoscaler"] = "hpa"
    raw["models"]["m5"]["vendor_configuration"]["model_infra"].update(min_workers=1, max_workers=4, per_worker=6)
    plan = plan_raw(raw)
    hpa = find(plan, "HorizontalPodAutoscaler", "m5")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    [metric] = hpa["spec"]["metrics"]
    assert metric["external"]["metric"] == {"name": "sgp_infra_model_requests_in_flight",
                                            "selector": {"matchLabels": {"model": "m5"}}}
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "6"}
    assert find(plan, "ScaledObject", "m5") is None
    assert "replicas" not in find(plan, "Deployment", "m5")["spec"]


def test_hpa_rejects_scale_to_zero_with_the_path_of_min_workers() -> None:
    raw = raw_catalog()
    raw["autoscaler"] = "hpa"
    raw["templates"]["tpl"]["vendor_configuration"]["endpoint_config"]["min_workers"] = 0
    raw["models"]["m4b"] = v4_model(min_workers=0)
    errors = plan_errors(raw)
    assert set(errors) == {
        "sgp-infra:models.m5.vendor_configuration.model_infra.min_workers",
        "sgp-infra:models.m4.min_workers",
        "sgp-infra:models.m4b.min_workers",
    }
    assert "from template 'tpl'" in errors["sgp-infra:models.m4.min_workers"]
    assert "from template" not in errors["sgp-infra:models.m4b.min_workers"]
    assert "cannot scale to zero" in errors["sgp-infra:models.m4b.min_workers"]


def test_fixed_size_models_get_replicas_and_no_autoscaler() -> None:
    raw = raw_catalog()
    raw["models"]["m5"]["vendor_configuration"]["model_infra"].update(min_workers=2, max_workers=2)
    raw["autoscaler"] = "hpa"
    raw["models"]["m4"]["min_workers"] = 1
    plan = plan_raw(raw)
    assert find(plan, "Deployment", "m5")["spec"]["replicas"] == 2
    assert find(plan, "HorizontalPodAutoscaler", "m5") is None
    assert plan.models["m5"].autoscaler is None


def test_pdb_only_when_more_than_one_replica_can_run() -> None:
    raw = raw_catalog()
    raw["models"]["single"] = v5_model(min_workers=0, max_workers=1)
    plan = plan_raw(raw)
    pdb = find(plan, "PodDisruptionBudget", "m5")
    match_labels = find(plan, "Deployment", "m5")["spec"]["selector"]["matchLabels"]
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": match_labels}}
    assert find(plan, "PodDisruptionBudget", "single") is None


def test_per_model_manifest_order() -> None:
    kinds = [m["kind"] for m in plan_raw(raw_catalog()).models["m5"].manifests]
    assert kinds == ["Deployment", "Service", "ScaledObject", "PodDisruptionBudget"]


def test_namespace_and_network_policy() -> None:
    plan = plan_raw(raw_catalog())
    ns = plan.manifests[0]
    assert (ns["kind"], ns["metadata"]["name"]) == ("Namespace", "models")
    policy = find(plan, "NetworkPolicy", "sgp-infra-models")
    assert policy["metadata"]["namespace"] == "models"
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "sgp-infra",
                                                   "app.kubernetes.io/component": "model"}}
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [{
        "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "sgp-infra",
                                                  "app.kubernetes.io/component": "api"}}}],
        "ports": [{"protocol": "TCP", "port": 5005}],
    }]
    # Every model pod is selected by the policy.
    for model in plan.models.values():
        pod_labels = model.manifests[0]["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_everything_namespaced_lives_in_the_stack_namespace() -> None:
    raw = raw_catalog()
    raw["namespace"] = "team-a"
    for manifest in plan_raw(raw).manifests:
        if manifest["kind"] not in ("Namespace", "PriorityClass"):
            assert manifest["metadata"]["namespace"] == "team-a"
