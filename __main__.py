"""The Pulumi program: the stack's catalogue, validated, then deployed.

Every catalogue problem is reported together, each with its config path, and
the program stops before registering any resource.
"""

import pulumi

from sgp_infra.catalog import CatalogInvalid, load_pulumi

try:
    catalog = load_pulumi()
except CatalogInvalid as invalid:
    for problem in invalid.errors:
        pulumi.log.error(str(problem))
    raise pulumi.RunError(invalid.render()) from None

pulumi.export("catalog", {
    "summary": catalog.summary(),
    "templates": sorted(catalog.templates),
    "models": {name: model.id for name, model in sorted(catalog.models.items())},
    "modelGroups": sorted(catalog.groups),
    "gpus": {gpu: {"min": lo, "max": hi} for gpu, (lo, hi) in catalog.gpu_totals().items()},
})
