"""A platform team's own Pulumi program built from sgp-infra's components.

It shows the three ways a team composes them in a program it owns:

* its own Kubernetes provider (a real cluster, or rendered YAML files) and its
  own namespace, both created here, not by sgp-infra;
* a ``ModelCatalog`` deploying a whole catalogue file, next to
* one ``ModelEndpoint`` for a model kept outside that catalogue, deployed into
  the team's namespace;
* a transform that adds the team's label to every Kubernetes object the
  components create, without changing the components.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from sgp_infra.catalog import CatalogInvalid, build_catalog, load_file
from sgp_infra.components import ModelCatalog, ModelEndpoint

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from team_labels import TEAM, TEAM_LABEL, label_team  # noqa: E402

config = pulumi.Config()
render_dir = config.get("renderDir") or None
provider = k8s.Provider("cluster", render_yaml_to_directory=render_dir) if render_dir else k8s.Provider("cluster")
team_namespace = k8s.core.v1.Namespace(
    "team-namespace",
    metadata={"name": config.get("namespace") or TEAM, "labels": {TEAM_LABEL: TEAM}},
    opts=pulumi.ResourceOptions(provider=provider),
)

try:
    catalog = load_file(HERE / (config.get("catalogFile") or "catalog.yaml"))
    # A model outside the catalogue: its own one-model catalogue, validated the
    # same way, whose settings put it in the team's namespace.
    extra = build_catalog({
        "accountId": catalog.settings.account_id,
        "namespace": config.get("namespace") or TEAM,
        "gpuProfile": catalog.settings.gpu_profile,
        "models": {
            "team-reranker": {
                "model_type": "generic",
                "model_vendor": "launch",
                "vendor_configuration": {
                    "model_image": {"registry": "ghcr.io/acme", "repository": "reranker", "tag": "1.2",
                                    "command": ["serve", "--port", "5005"], "healthcheck_route": "/health"},
                    "model_infra": {"gpus": 1, "gpu_type": "nvidia-tesla-t4", "min_workers": 1, "max_workers": 2,
                                    "per_worker": 4, "endpoint_type": "sync"},
                },
            },
        },
    })
except CatalogInvalid as invalid:
    for problem in invalid.errors:
        pulumi.log.error(str(problem))
    raise pulumi.RunError(invalid.render()) from None

component_opts = pulumi.ResourceOptions(providers=[provider], transforms=[label_team])
models = ModelCatalog("catalog", {"catalog": catalog}, component_opts)
reranker = ModelEndpoint(
    "team-reranker",
    {"model": extra.models["team-reranker"], "settings": extra.settings, "namespace": team_namespace},
    component_opts,
)

pulumi.export("catalogNamespace", models.namespace)
pulumi.export("urls", pulumi.Output.all(models.urls, reranker.url).apply(
    lambda parts: {**parts[0], "team-reranker": parts[1]}))
