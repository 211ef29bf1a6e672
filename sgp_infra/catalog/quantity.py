"""Kubernetes resource quantities (``500m``, ``8Gi``, ``1e3``).

Memory, storage and CPU values from the catalogue end up verbatim in a pod's
``resources``; a malformed one would only surface when the API server rejects
the Deployment.  Parsing them here turns that into a config error instead.
"""

from __future__ import annotations

import re
from decimal import Decimal

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exp>[eE][-+]?[0-9]+)|(?P<dec>[numkMGTPE]?))$"
)


def parse_quantity(value: str | int | float) -> Decimal:
    """Return the quantity's value in base units; raise ``ValueError`` if malformed.

    Only non-negative quantities are accepted: every catalogue quantity is a
    resource amount.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity (examples: 500m, 2, 8Gi, 16G)"
        )
    number = Decimal(match["num"])
    if match["bin"]:
        return number * _BINARY[match["bin"]]
    if match["exp"]:
        return number * (Decimal(10) ** int(match["exp"][1:]))
    return number * _DECIMAL[match["dec"] or ""]


def is_quantity(value: object) -> bool:
    try:
        parse_quantity(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return True
