"""The JetStream layout (names and limits, decided once) and the in-cluster NATS plan."""

from __future__ import annotations

from typing import Any

import pytest

from plan_fixtures import find, plan_errors, plan_raw, pod_spec, raw_catalog, v5_model
from sgp_infra.catalog import CatalogInvalid, build_catalog
from sgp_infra.plan.api import deployment as api_deployment
from sgp_infra.plan.nats import (CLIENT_PORT, CLUSTER_PORT, MONITOR_PORT, NATS_NAME, client_url, nats_conf,
                                 task_layout)


def async_raw(**infra: Any) -> dict[str, Any]:
    raw = raw_catalog()
    raw["namespace"] = "ml"
    raw["models"]["m5"] = v5_model(endpoint_type="async", per_worker=3, max_workers=4, **infra)
    raw["models"]["m5"]["async_tasks"] = {"task_timeout_seconds": 120, "max_deliveries": 5, "result_ttl_seconds": 600}
    return raw


def test_layout_names_and_limits() -> None:
    layout = task_layout(build_catalog(async_raw()))
    assert layout.stream == "sgp-infra-tasks-ml" and layout.bucket == "sgp-infra-results-ml"
    assert layout.stream_subjects == ("sgp-infra.ml.tasks.>",)
    assert list(layout.queues) == ["m5"]  # only ASYNC models have a queue
    q = layout.queues["m5"]
    assert q.subject == "sgp-infra.ml.tasks.m5" and q.consumer == "m5"
    # Each task on its own subject, so a queued task is read back by its id alone, whatever its model.
    task_id = "0b7f3f5e-8a3c-4a8e-9d7e-2f1f6b1d9c00"
    assert q.task_subject(task_id) == f"sgp-infra.ml.tasks.m5.{task_id}"
    assert q.filter_subject == "sgp-infra.ml.tasks.m5.*"
    assert layout.any_task_subject(task_id) == f"sgp-infra.ml.tasks.*.{task_id}"
    assert q.max_ack_pending == 3 * 4 and q.per_worker == 3
    assert q.ack_wait_seconds == 120 + 30 and q.max_deliver == 5 + 1
    assert layout.bucket_ttl_seconds == 600 and layout.replicas == 1


def test_in_cluster_nats_only_with_async_models_and_no_nats_url() -> None:
    assert find(plan_raw(raw_catalog()), "StatefulSet", NATS_NAME) is None
    plan = plan_raw(async_raw())
    sts = find(plan, "StatefulSet", NATS_NAME)
    assert sts is not None and sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == \
        {"storage": "10Gi"}
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz?js-enabled-only=true"
    assert container["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    external = async_raw()
    external["async"] = {"natsUrl": "nats://nats.infra:4222", "monitoringEndpoint": "nats.infra:8222"}
    plan = plan_raw(external)
    assert find(plan, "StatefulSet", NATS_NAME) is None
    trigger = find(plan, "ScaledObject", "m5")["spec"]["triggers"][0]  # type: ignore[index]
    assert trigger["metadata"]["natsServerMonitoringEndpoint"] == "nats.infra:8222"


def test_credentials_in_nats_url_are_refused_without_echoing_them() -> None:
    # They would be published in clear: the catalogue ConfigMap and the forwarders' args.
    for url in ("nats://alice:s3cret@nats.infra:4222", "tls://s3cret@nats.infra:4222", "http://alice:s3cret@x"):
        raw = async_raw()
        raw["async"] = {"natsUrl": url, "monitoringEndpoint": "nats.infra:8222"}
        with pytest.raises(CatalogInvalid) as caught:
            build_catalog(raw)
        [error] = caught.value.errors
        assert error.path == "sgp-infra:async.natsUrl" and "credentials" in error.message
        assert "s3cret" not in str(caught.value)


def test_cluster_routes_and_r3() -> None:
    raw = async_raw()
    raw["async"] = {"replicas": 3}
    catalog = build_catalog(raw)
    conf = nats_conf(catalog.settings)
    assert "cluster {" in conf and conf.count(":6222") == 4  # listen + three routes
    assert "sgp-infra-nats-2.sgp-infra-nats-headless.ml.svc.cluster.local" in conf
    assert task_layout(catalog).replicas == 3
    assert "cluster {" not in nats_conf(build_catalog(async_raw()).settings)


def test_keda_trigger_scales_from_zero_on_the_queue() -> None:
    plan = plan_raw(async_raw())
    scaled = find(plan, "ScaledObject", "m5")
    assert scaled is not None
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "nats-jetstream"
    assert trigger["metadata"] == {
        "natsServerMonitoringEndpoint": "sgp-infra-nats-headless.ml.svc.cluster.local:8222", "account": "$G",
        "stream": "sgp-infra-tasks-ml", "consumer": "m5", "lagThreshold": "3", "activationLagThreshold": "0",
        "useHttps": "false"}
    assert scaled["spec"]["minReplicaCount"] == 0


def test_forwarder_sidecar() -> None:
    plan = plan_raw(async_raw())
    pod = pod_spec(plan, "m5")
    model, forwarder = pod["containers"]
    assert model["name"] == "model" and forwarder["name"] == "forwarder"
    args = forwarder["args"]
    assert args[:2] == ["forwarder", "--config-file"] and args[args.index("--model") + 1] == "m5"
    assert args[args.index("--backend") + 1] == "http://127.0.0.1:5005"
    assert args[args.index("--nats") + 1] == client_url(build_catalog(async_raw()).settings)
    assert forwarder["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] == 150  # the task limit plus a margin
    assert {"name": "catalog", "configMap": {"name": "sgp-infra-catalog"}} in pod["volumes"]
    assert len(pod_spec(plan, "m4")["containers"]) == 1


def _admits(policy_ingress: list[dict[str, Any]], labels: dict[str, str], port: int) -> bool:
    """Whether a same-namespace pod with ``labels`` may reach ``port`` under these ingress rules."""
    return any(
        any(p["port"] == port for p in rule["ports"])
        and any("namespaceSelector" not in peer
                and peer["podSelector"]["matchLabels"].items() <= labels.items() for peer in rule["from"])
        for rule in policy_ingress)


def test_network_policy_admits_only_the_stacks_clients() -> None:
    raw = async_raw()
    raw["async"] = {"replicas": 3}
    catalog = build_catalog(raw)
    plan = plan_raw(raw)
    policy = find(plan, "NetworkPolicy", NATS_NAME)
    assert policy is not None
    sts = find(plan, "StatefulSet", NATS_NAME)
    nats_pod = sts["spec"]["template"]["metadata"]["labels"]  # type: ignore[index]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= nats_pod.items()
    ingress = policy["spec"]["ingress"]
    api_pod = api_deployment(catalog)["spec"]["template"]["metadata"]["labels"]
    model_pod = find(plan, "Deployment", "m5")["spec"]["template"]["metadata"]["labels"]  # type: ignore[index]
    sync_pod = find(plan, "Deployment", "m4")["spec"]["template"]["metadata"]["labels"]  # type: ignore[index]
    # The API and the forwarder sidecars in ASYNC model pods reach the client port; nothing else of the
    # stack's does: not a SYNC model's image, which would otherwise read every account's tasks.
    assert _admits(ingress, api_pod, CLIENT_PORT) and _admits(ingress, model_pod, CLIENT_PORT)
    assert not _admits(ingress, sync_pod, CLIENT_PORT)
    assert not _admits(ingress, {"app": "something-else"}, CLIENT_PORT)
    assert not _admits(ingress, api_pod, CLUSTER_PORT) and not _admits(ingress, model_pod, MONITOR_PORT)
    # Peers reach the cluster port; KEDA's operator (any namespace) the monitoring port only.
    assert _admits(ingress, nats_pod, CLUSTER_PORT)
    keda = [rule for rule in ingress if any("namespaceSelector" in peer for peer in rule["from"])]
    assert [p["port"] for rule in keda for p in rule["ports"]] == [MONITOR_PORT]
    assert keda[0]["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "keda-operator"}
    # A single server has no cluster port to admit.
    single = find(plan_raw(async_raw()), "NetworkPolicy", NATS_NAME)
    assert single is not None and all(p["port"] != CLUSTER_PORT for r in single["spec"]["ingress"] for p in r["ports"])


def test_rules_that_cannot_hold() -> None:
    hpa = async_raw()
    hpa["autoscaler"] = "hpa"
    message = plan_errors(hpa)["sgp-infra:models.m5.vendor_configuration.model_infra.endpoint_type"]
    assert "nats-jetstream" in message and "hpa" in message
    no_monitor = async_raw()
    no_monitor["async"] = {"natsUrl": "nats://nats:4222"}
    assert "KEDA" in plan_errors(no_monitor)["sgp-infra:async.monitoringEndpoint"]
    ignored = async_raw()
    ignored["async"] = {"natsUrl": "nats://nats:4222", "monitoringEndpoint": "nats:8222", "storage": "50Gi"}
    assert "not planned" in plan_errors(ignored)["sgp-infra:async.storage"]


def test_async_settings_are_validated() -> None:
    from sgp_infra.catalog import CatalogInvalid
    import pytest

    for bad, path in [({"natsUrl": "http://x"}, "sgp-infra:async.natsUrl"),
                      ({"replicas": 2}, "sgp-infra:async.replicas"),
                      ({"storage": "lots"}, "sgp-infra:async.storage"),
                      ({"natsurl": "nats://x"}, "sgp-infra:async.natsurl")]:
        raw = async_raw()
        raw["async"] = bad
        with pytest.raises(CatalogInvalid) as caught:
            build_catalog(raw)
        assert path in {e.path for e in caught.value.errors}, caught.value.render()
