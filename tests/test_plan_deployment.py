"""The Deployment and Service of a model: image, command, env, resources, probes, rollout, labels."""

from __future__ import annotations

from plan_fixtures import container, find, plan_errors, plan_raw, pod_spec, raw_catalog, template, v4_model, v5_model
from sgp_infra.catalog import entity_id
from sgp_infra.plan.constants import HIGH_PRIORITY_CLASS


def test_v4_image_command_and_injected_env() -> None:
    plan = plan_raw(raw_catalog())
    c = container(plan, "m4")
    assert c["image"] == "ghcr.io/acme/server:1.0"
    assert c["command"] == ["serve", "--weights", "s3://w/m"]
    assert c["env"] == [{"name": "MODEL_NAME", "value": "s3://w/m"}, {"name": "STATIC", "value": "yes"}]
    assert c["ports"] == [{"name": "http", "containerPort": 5005, "protocol": "TCP"}]


def test_v5_image_uses_repository() -> None:
    assert container(plan_raw(raw_catalog()), "m5")["image"] == "ghcr.io/acme/reranker:1.2"


def test_streaming_endpoint_runs_streaming_command_and_records_its_route() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["endpoint_type"] = "STREAMING"
    raw["templates"]["tpl"]["vendor_configuration"]["bundle_config"]["streaming_predict_route"] = "/stream"
    plan = plan_raw(raw)
    assert container(plan, "m4")["command"] == ["serve", "--stream", "--weights", "s3://w/m"]
    annotations = find(plan, "Service", "m4")["metadata"]["annotations"]
    assert annotations["sgp-infra.io/streaming-predict-route"] == "/stream"
    assert annotations["sgp-infra.io/endpoint-type"] == "STREAMING"
    assert annotations["sgp-infra.io/predict-route"] == "/predict"


def test_streaming_without_streaming_command_keeps_command() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["endpoint_type"] = "STREAMING"
    del raw["templates"]["tpl"]["vendor_configuration"]["bundle_config"]["streaming_command"]
    assert container(plan_raw(raw), "m4")["command"] == ["serve", "--weights", "s3://w/m"]


def test_sync_endpoint_ignores_streaming_command_and_route() -> None:
    plan = plan_raw(raw_catalog())
    assert container(plan, "m4")["command"][1] == "--weights"
    annotations = find(plan, "Service", "m4")["metadata"]["annotations"]
    assert "sgp-infra.io/streaming-predict-route" not in annotations
    assert annotations["sgp-infra.io/healthcheck-route"] == "/readyz"
    assert annotations["sgp-infra.io/sgp-name"] == "m4"


def test_requests_equal_limits_with_ephemeral_storage() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["vendor_configuration"]["endpoint_config"].update(cpus=4, memory="24Gi", storage="50Gi")
    res = container(plan_raw(raw), "m4")["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "4", "memory": "24Gi", "ephemeral-storage": "50Gi",
                                                "nvidia.com/gpu": "1"}


def test_spec_defaults_apply() -> None:
    """Seed 002 defaults: 3 CPUs, 8Gi memory, 16Gi storage, /readyz, 120 s readiness delay."""
    res = container(plan_raw(raw_catalog()), "m5")["resources"]["limits"]
    assert (res["cpu"], res["memory"], res["ephemeral-storage"]) == ("3", "8Gi", "16Gi")


def test_probes() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["vendor_configuration"]["bundle_config"].update(
        readiness_initial_delay_seconds=900, healthcheck_route="/health")
    c = container(plan_raw(raw), "m4")
    ready, startup, live = c["readinessProbe"], c["startupProbe"], c["livenessProbe"]
    assert ready["httpGet"] == {"path": "/health", "port": "http"}
    assert ready["initialDelaySeconds"] == 900
    # The startup probe outlasts the readiness delay by at least half an hour.
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900 + 1800
    # Liveness only runs after startup succeeded and only checks the port.
    assert live == {"tcpSocket": {"port": "http"}, "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 6}


def test_startup_budget_grows_with_very_slow_models() -> None:
    raw = raw_catalog()
    raw["templates"]["tpl"]["vendor_configuration"]["bundle_config"]["readiness_initial_delay_seconds"] = 7200
    plan = plan_raw(raw)
    startup = container(plan, "m4")["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 2 * 7200
    assert find(plan, "Deployment", "m4")["spec"]["progressDeadlineSeconds"] >= 7200
    assert plan.models["m4"].rollout_timeout_seconds >= 7200


def test_rollout_strategy() -> None:
    spec = find(plan_raw(raw_catalog()), "Deployment", "m4")["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_high_priority_sets_priority_class_and_plans_it() -> None:
    raw = raw_catalog()
    raw["models"]["m5"]["vendor_configuration"]["model_infra"]["high_priority"] = True
    plan = plan_raw(raw)
    assert pod_spec(plan, "m5")["priorityClassName"] == HIGH_PRIORITY_CLASS
    assert "priorityClassName" not in pod_spec(plan, "m4")
    pc = find(plan, "PriorityClass", HIGH_PRIORITY_CLASS)
    assert pc is not None and pc["value"] > 0 and pc["globalDefault"] is False
    assert "namespace" not in pc["metadata"]  # cluster-scoped


def test_priority_classes_can_be_switched_off() -> None:
    raw = raw_catalog()
    raw["models"]["m5"]["vendor_configuration"]["model_infra"]["high_priority"] = True
    raw["createPriorityClasses"] = False
    plan = plan_raw(raw)
    assert find(plan, "PriorityClass", HIGH_PRIORITY_CLASS) is None
    assert pod_spec(plan, "m5")["priorityClassName"] == HIGH_PRIORITY_CLASS


def test_no_priority_class_without_high_priority_models() -> None:
    assert not [m for m in plan_raw(raw_catalog()).manifests if m["kind"] == "PriorityClass"]


def test_security_context_is_restrictive() -> None:
    plan = plan_raw(raw_catalog())
    sc = container(plan, "m4")["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    pod = pod_spec(plan, "m4")
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False


def test_labels_recommended_sgp_infra_and_v5() -> None:
    raw = raw_catalog()
    raw["models"]["m5"]["vendor_configuration"]["model_infra"]["labels"] = {"team": "search", "acme.io/cost": "ml"}
    plan = plan_raw(raw)
    d4 = find(plan, "Deployment", "m4")
    labels4 = d4["spec"]["template"]["metadata"]["labels"]
    assert labels4 == d4["metadata"]["labels"]
    assert labels4["app.kubernetes.io/name"] == labels4["app.kubernetes.io/instance"] == "m4"
    assert labels4["app.kubernetes.io/component"] == "model"
    assert labels4["app.kubernetes.io/part-of"] == "sgp-infra"
    assert labels4["app.kubernetes.io/managed-by"] == "pulumi"
    assert labels4["sgp-infra.io/model-name"] == "m4"
    assert labels4["sgp-infra.io/model-id"] == entity_id("acct", "model", "m4")
    assert labels4["sgp-infra.io/template"] == "tpl"
    labels5 = find(plan, "Deployment", "m5")["spec"]["template"]["metadata"]["labels"]
    assert labels5["team"] == "search" and labels5["acme.io/cost"] == "ml"
    assert "sgp-infra.io/template" not in labels5
    # The selector is a subset of the pod labels.
    selector = d4["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels4.items()


def test_object_names_are_slugs_of_model_names() -> None:
    raw = raw_catalog()
    raw["models"] = {"Llama-3.1_8B": v5_model()}
    raw["modelGroups"] = {}
    plan = plan_raw(raw)
    assert {m["metadata"]["name"] for m in plan.manifests if m["kind"] == "Deployment"} == {"llama-3-1-8b"}
    assert plan.models["Llama-3.1_8B"].service_url == "http://llama-3-1-8b.models.svc.cluster.local"
    assert find(plan, "Service", "llama-3-1-8b")["metadata"]["annotations"]["sgp-infra.io/sgp-name"] == "Llama-3.1_8B"


def test_invalid_or_reserved_v5_labels_are_config_errors() -> None:
    raw = raw_catalog()
    raw["models"]["m5"]["vendor_configuration"]["model_infra"]["labels"] = {
        "app.kubernetes.io/name": "x", "team": "has space", "ok": "fine"}
    errors = plan_errors(raw)
    base = "sgp-infra:models.m5.vendor_configuration.model_infra.labels"
    assert set(errors) == {f'{base}["app.kubernetes.io/name"]', f"{base}.team"}


def test_service_is_cluster_ip_on_port_80_to_the_model_port() -> None:
    plan = plan_raw(raw_catalog())
    svc = find(plan, "Service", "m4")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == find(plan, "Deployment", "m4")["spec"]["selector"]["matchLabels"]
    assert plan.models["m4"].service_url == "http://m4.models.svc.cluster.local"
    assert plan.models["m4"].deployment_name == "m4"


def test_manifests_are_deterministic_and_in_apply_order() -> None:
    raw = raw_catalog()
    raw["models"]["a-first"] = v4_model()
    first, second = plan_raw(raw), plan_raw(raw)
    assert first.manifests == second.manifests
    kinds = [m["kind"] for m in first.manifests]
    assert kinds[0] == "Namespace" and kinds[1] == "NetworkPolicy"
    deployments = [m["metadata"]["name"] for m in first.manifests if m["kind"] == "Deployment"]
    assert deployments == sorted(deployments)


def test_model_templates_feed_models() -> None:
    raw = raw_catalog()
    raw["templates"]["other"] = template()
    raw["models"]["m4b"] = v4_model(model_template_id="other")
    plan = plan_raw(raw)
    assert find(plan, "Deployment", "m4b")["metadata"]["labels"]["sgp-infra.io/template"] == "other"
