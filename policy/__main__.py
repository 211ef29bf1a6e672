"""Entry point of the sgp-infra CrossGuard policy pack (``pulumi preview --policy-pack policy``).

The policies are defined in :mod:`sgp_pack` and their checks in
:mod:`sgp_policies`, both importable for tests; constructing the
``PolicyPack`` here starts the analyzer server Pulumi talks to.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pulumi_policy import PolicyPack  # noqa: E402

from sgp_pack import DESCRIPTION, NAME, POLICIES  # noqa: E402

PolicyPack(name=NAME, description=DESCRIPTION, policies=POLICIES)
