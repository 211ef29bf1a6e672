"""The team's transform: its label on every Kubernetes object the components create.

A transform given to a component in ``ResourceOptions(transforms=[...])``
runs for the component and every resource below it, before each is
registered, so the team labels sgp-infra's objects without forking the
components or the planner.
"""

from __future__ import annotations

from typing import Optional

import pulumi

TEAM_LABEL = "acme.example.com/team"
TEAM = "ml-platform"


def label_team(args: pulumi.ResourceTransformArgs) -> Optional[pulumi.ResourceTransformResult]:
    """Add the team label to every Kubernetes object (components themselves have no labels)."""
    if not args.custom or not args.type_.startswith("kubernetes:") or args.type_ == "pulumi:providers:kubernetes":
        return None
    props = dict(args.props)
    metadata = dict(props.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), TEAM_LABEL: TEAM}
    props["metadata"] = metadata
    return pulumi.ResourceTransformResult(props=props, opts=args.opts)
