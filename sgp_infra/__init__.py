"""sgp-infra: an SGP model catalogue in Pulumi stack config, deployed to Kubernetes.

Data flow: ``catalog`` (validated SGP entities) → ``plan`` (pure functions,
Kubernetes manifests as dicts) → ``components`` (Pulumi resources) and the
``render`` command; ``api`` serves the catalogue and routes inference.
"""

__version__ = "0.1.0"
