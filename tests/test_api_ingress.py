"""``sgp-infra:api``'s workers, limits, resources and ingress: planned, schema-valid, registered, rendered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pulumi
import pytest
import yaml

from api_helpers import ROOT
from mock_helpers import Recorder, strict_schema
from sgp_infra.catalog import CatalogInvalid, build_catalog, raw_from_stack_doc
from sgp_infra.cli import main
from sgp_infra.components.catalog_api import CatalogApi
from sgp_infra.plan.api import plan_api

SCHEMAS = Path(__file__).resolve().parent / "schemas" / "gateway-api"


def catalog_with(api: dict[str, Any]) -> Any:
    raw = raw_from_stack_doc(yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text()))
    return build_catalog({**raw, "api": api})


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [m for m in manifests if m["kind"] == kind]
    return found


def container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return of_kind(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]


HTTPROUTE = jsonschema.Draft7Validator(strict_schema(json.loads((SCHEMAS / "httproute-v1.schema.json").read_text())))
GATEWAY = {"kind": "httproute", "host": "sgp.example.com", "gatewayRef": {"name": "edge", "namespace": "gateways"}}
NGINX = {"kind": "ingress", "host": "sgp.example.com", "className": "nginx", "tlsSecretName": "sgp-tls"}


# --- workers, limits, resources ---------------------------------------------------------------------------


def test_workers_and_every_limit_reach_the_serve_command_line() -> None:
    c = container(plan_api(catalog_with({"workers": 3, "limits": {"maxBodyBytes": 2 * 1024 * 1024,
                                                                   "headerTimeoutSeconds": 2.5}})))
    args = c["args"]
    flags = dict(zip(args[1::2], args[2::2], strict=True))  # after "serve": --flag value pairs
    assert flags["--workers"] == "3" and flags["--max-body-bytes"] == "2097152" and flags["--header-timeout"] == "2.5"
    assert flags["--max-headers"] == "100" and flags["--keep-alive-timeout"] == "75"
    assert flags["--max-connections"] == "1000" and flags["--max-header-bytes"] == "16384"


def test_the_planned_serve_flags_are_flags_serve_accepts() -> None:
    from sgp_infra.cli import build_parser

    args = container(plan_api(catalog_with({"workers": 2})))["args"]
    parsed = build_parser().parse_args(args)
    assert parsed.workers == 2 and parsed.max_body_bytes == 16 * 1024 * 1024 and parsed.header_timeout_seconds == 10


@pytest.mark.parametrize("workers", [1, 4])
def test_resources_scale_with_workers_unless_set(workers: int) -> None:
    c = container(plan_api(catalog_with({"workers": workers})))
    expected_cpu = {1: "250m", 4: "1"}[workers]
    assert c["resources"] == {"requests": {"cpu": expected_cpu, "memory": f"{256 * workers}Mi"},
                              "limits": {"cpu": str(workers), "memory": f"{512 * workers}Mi"}}
    custom = container(plan_api(catalog_with({"workers": workers, "resources": {"requests": {"cpu": "2"},
                                                                                 "limits": {"memory": "3Gi"}}})))
    assert custom["resources"]["requests"]["cpu"] == "2" and custom["resources"]["limits"]["memory"] == "3Gi"
    assert custom["resources"]["requests"]["memory"] == f"{256 * workers}Mi"


def test_bad_api_settings_are_config_errors_with_their_paths() -> None:
    cases = [
        ({"workers": 0}, "sgp-infra:api.workers"),
        ({"limits": {"maxHeaders": 1}}, "sgp-infra:api.limits.maxHeaders"),
        ({"limits": {"maxBodyByte": 1}}, "sgp-infra:api.limits.maxBodyByte"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "sgp-infra:api.resources.requests.cpu"),
        ({"ingress": {"kind": "httproute"}}, "sgp-infra:api.ingress"),
        ({"ingress": {"kind": "ingress", "gatewayRef": {"name": "g"}}}, "sgp-infra:api.ingress"),
        ({"ingress": {"kind": "route"}}, "sgp-infra:api.ingress.kind"),
        ({"ingress": {"kind": "ingress", "host": "Not A Host"}}, "sgp-infra:api.ingress.host"),
    ]
    for api, path in cases:
        with pytest.raises(CatalogInvalid) as info:
            catalog_with(api)
        assert path in info.value.render(), (api, info.value.render())


# --- the ingress ---------------------------------------------------------------------------------------------------


def test_no_ingress_unless_asked() -> None:
    assert not [m for m in plan_api(catalog_with({})) if m["kind"] in ("Ingress", "HTTPRoute")]


def test_the_httproute_points_at_the_api_service_and_passes_the_gateway_api_schema() -> None:
    route = of_kind(plan_api(catalog_with({**{}, "ingress": {**GATEWAY, "requestTimeoutSeconds": 900}})),
                    "HTTPRoute")
    errors = sorted(HTTPROUTE.iter_errors(route), key=str)
    assert not errors, [e.message for e in errors]
    spec = route["spec"]
    assert spec["hostnames"] == ["sgp.example.com"]
    assert spec["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge",
                                   "namespace": "gateways"}]
    [rule] = spec["rules"]
    assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": "sgp-infra-api", "port": 80}]
    assert rule["timeouts"] == {"request": "15m"}
    assert route["metadata"]["namespace"] == "sgp-dev"


def test_the_strict_httproute_schema_rejects_a_misspelt_field() -> None:
    route = of_kind(plan_api(catalog_with({"ingress": GATEWAY})), "HTTPRoute")
    route["spec"]["rules"][0]["timeout"] = {"request": "1s"}
    assert list(HTTPROUTE.iter_errors(route))


@pytest.mark.parametrize("version", ["1.27", "1.31"])
def test_the_ingress_carries_the_api_limits_and_passes_strict_schemas(version: str) -> None:
    manifests = plan_api(catalog_with({"limits": {"maxBodyBytes": 8 * 1024 * 1024},
                                       "ingress": {**NGINX, "readTimeoutSeconds": 600,
                                                   "annotations": {"cert-manager.io/cluster-issuer": "le"}}}))
    ingress = of_kind(manifests, "Ingress")
    kubernetes_validate.validate(ingress, version, strict=True)
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "8m"
    assert notes["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "600"
    assert notes["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "600"
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert notes["cert-manager.io/cluster-issuer"] == "le"
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx" and spec["tls"] == [{"hosts": ["sgp.example.com"],
                                                                    "secretName": "sgp-tls"}]
    backend = spec["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "sgp-infra-api", "port": {"number": 80}}
    for manifest in manifests:  # and the rest of the API's objects with it
        kubernetes_validate.validate(manifest, version, strict=True)


def test_render_includes_the_ingress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    doc["config"]["sgp-infra:api"] = {"ingress": GATEWAY}
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    assert main(["render", "--config-file", str(path), "--out", str(out)]) == 0
    [route_file] = [p for p in out.iterdir() if "-httproute-" in p.name]
    assert yaml.safe_load(route_file.read_text())["spec"]["hostnames"] == ["sgp.example.com"]


# --- the component ---------------------------------------------------------------------------------------------------


@pulumi.runtime.test
def test_the_component_registers_the_planned_httproute(recorder: Recorder) -> Any:
    api = CatalogApi("gw", {"catalog": catalog_with({"ingress": GATEWAY}), "api_keys": {"k": ["dev-account"]}})

    def check(_: Any) -> None:
        typ, inputs = recorder.registered["gw-httproute"]
        assert typ == "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
        assert inputs["spec"]["hostnames"] == ["sgp.example.com"]

    return pulumi.Output.all(*[c.urn for c in api.children.values()]).apply(check)


@pulumi.runtime.test
def test_the_component_registers_the_planned_ingress(recorder: Recorder) -> Any:
    api = CatalogApi("ing", {"catalog": catalog_with({"ingress": NGINX, "workers": 2}),
                             "api_keys": {"k": ["dev-account"]}})

    def check(_: Any) -> None:
        typ, inputs = recorder.registered["ing-ingress"]
        assert typ == "kubernetes:networking.k8s.io/v1:Ingress"
        assert inputs["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "16m"
        _, dep = recorder.registered["ing-deployment"]
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--workers") + 1] == "2"

    return pulumi.Output.all(*[c.urn for c in api.children.values()]).apply(check)
