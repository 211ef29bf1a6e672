"""Keeping the garbage collector off objects that live until the process ends.

Why: a ``pulumi up`` (the program in ``__main__.py``) and a ``render`` are
short, allocation-heavy processes.  By the time the catalogue is validated and
planned, the heap holds ~180,000 long-lived objects (the imported Pulumi,
pulumi_kubernetes and pydantic modules, the catalogue, the planned
manifests), and every full collection while the Pulumi SDK registers
resources, or while YAML is written, scans all of them again.  Measured under
Pulumi's mocks, those rescans made the program ~20% slower than a hand-written
one registering the same resources (``bench/bench_plan.py``).

:func:`freeze_long_lived` moves everything alive at that point into the
collector's permanent generation (:func:`gc.freeze`), so later collections
look only at what was allocated after it.  Objects stay freeable by reference
counting; only reference cycles that were already garbage at the freeze stay
in memory until exit, which is why only one-shot processes call it (never the
components, which run inside other people's programs).  There is no
``gc.collect()`` before the freeze: that full pass over the same heap cost
more than the rescans it saves on a small catalogue, for a little garbage
that a one-shot process drops at exit anyway.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Exclude every object alive now from later collections."""
    gc.freeze()
