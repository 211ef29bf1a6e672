"""The Pulumi program: the stack's catalogue, validated, planned, then deployed.

Every catalogue problem (validation and planning alike) is reported together,
each with its config path, and the program stops before registering any
resource.  A stack that sets ``kubernetes:renderYamlToDirectory`` gets an
explicit Kubernetes provider that writes the manifests to that directory
instead of talking to a cluster.
"""

from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from sgp_infra.catalog import CatalogInvalid, load_pulumi
from sgp_infra.components import CatalogApi, ModelCatalog
from sgp_infra.heap import freeze_long_lived
from sgp_infra.plan import plan_catalog

# The imported modules, then the catalogue and plan, live until the program ends: keep
# the garbage collector from rescanning them while it works (sgp_infra/heap.py).
freeze_long_lived()
try:
    catalog = load_pulumi()
    plan = plan_catalog(catalog)
except CatalogInvalid as invalid:
    for problem in invalid.errors:
        pulumi.log.error(str(problem))
    raise pulumi.RunError(invalid.render()) from None
freeze_long_lived()

opts: Optional[pulumi.ResourceOptions] = None
render_dir = pulumi.Config("kubernetes").get("renderYamlToDirectory")
if render_dir:
    provider = k8s.Provider("render-yaml", render_yaml_to_directory=render_dir)
    opts = pulumi.ResourceOptions(provider=provider)

models = ModelCatalog("sgp-infra", {"catalog": catalog, "plan": plan}, opts=opts)
# The API serves this catalogue; its keys come from the secret sgp-infra:apiKeys (and its NATS
# credentials from the Secret of sgp-infra:natsCredentials, which ModelCatalog creates).
namespace = models.namespace_resource
api = CatalogApi("sgp-infra-api", {"catalog": catalog, **({"namespace": namespace} if namespace else {}),
                                   "nats_credentials": models.nats_credentials}, opts=opts)

pulumi.export("catalog", {
    "summary": catalog.summary(),
    "templates": sorted(catalog.templates),
    "models": {name: model.id for name, model in sorted(catalog.models.items())},
    "modelGroups": sorted(catalog.groups),
    "gpus": {gpu: {"min": lo, "max": hi} for gpu, (lo, hi) in catalog.gpu_totals().items()},
})
pulumi.export("namespace", models.namespace)
pulumi.export("modelUrls", models.urls)
pulumi.export("apiUrl", api.url)
pulumi.export("placements", {name: e.placement for name, e in models.endpoints.items()})
