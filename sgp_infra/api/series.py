"""Counters and histograms for the per-request paths, kept as plain numbers and
exposed through ``prometheus_client``'s custom-collector interface.

Why not ``prometheus_client.Counter`` and ``Histogram`` there: a proxied
inference request updates four series (the API's request counter and latency
histogram, the model's request counter and upstream latency histogram).  Each
``inc()`` or ``observe()`` runs a few layers of checks and takes a lock per
value touched (a histogram observation takes two), because those classes are
built to be shared by threads.  On the two-core benchmark machine the four
updates were about a tenth of the API's CPU per proxied request (measured by
turning them off: ``docs/inference.md``, Benchmark).  This service updates its
metrics from its event loop thread only, so none of that is needed: here an
update is one dict lookup and an addition.

What ``/metrics`` shows is unchanged: the same families, sample names, label
order, ``le`` buckets, ``_count``, ``_sum`` and ``_created`` samples, in
first-use order, as the ``prometheus_client`` classes they replace printed
(``tests/test_api_series.py`` compares the two expositions).

Single writer: update a series from one thread only (the service's event
loop).  Reading (``collect()``, a scrape) may happen from any thread: it copies
the dict first, and an update it races with shows at the next scrape.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Iterator, Optional, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

#: A series' label values, in the family's label order (ints and other values are shown with ``str``).
Labels = tuple[object, ...]


class _Series(Collector):
    """A family of series by label values; :meth:`collect` builds the samples at scrape time."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: Optional[CollectorRegistry]):
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        #: First-use time of each series, its ``_created`` sample.
        self.created: dict[Labels, float] = {}
        if registry is not None:
            registry.register(self)

    def _new(self, labels: Labels) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(labels)} label values for labels {self.labelnames}")
        self.created[labels] = time.time()

    def _family(self) -> Metric:
        return Metric(self.name, self.documentation, self.kind)

    def _labels(self, labels: Labels) -> dict[str, str]:
        return dict(zip(self.labelnames, map(str, labels), strict=True))

    def describe(self) -> Iterator[Metric]:
        """The family without samples: what registration needs to check for name clashes."""
        yield self._family()


class CounterSeries(_Series):
    """A counter family: ``inc(labels)`` adds to the series of those label values.

    ``name`` is the family name without ``_total`` (the sample is ``name_total``).
    """

    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: Optional[CollectorRegistry] = None):
        if name.endswith("_total"):
            name = name[:-6]
        self.values: dict[Labels, float] = {}
        super().__init__(name, documentation, labelnames, registry)

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        current = values.get(labels)
        if current is None:
            self._new(labels)
            current = 0.0
        values[labels] = current + amount

    def value(self, labels: Labels) -> float:
        """The series' count (0 if it was never incremented)."""
        return self.values.get(labels, 0.0)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for labels, value in list(self.values.items()):
            shown = self._labels(labels)
            family.add_sample(self.name + "_total", shown, value)
            family.add_sample(self.name + "_created", shown, self.created[labels])
        yield family


class HistogramSeries(_Series):
    """A histogram family with fixed ``buckets`` (upper bounds, ascending; ``+Inf`` is added).

    Each series is one list: a count per bucket (not cumulative), then the sum.
    """

    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float],
                 registry: Optional[CollectorRegistry] = None):
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be strictly ascending")
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        self._le = tuple(floatToGoString(b) for b in bounds)
        self.series: dict[Labels, list[float]] = {}
        super().__init__(name, documentation, labelnames, registry)

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.series.get(labels)
        if counts is None:
            self._new(labels)
            counts = self.series[labels] = [0.0] * (len(self.bounds) + 1)
        counts[bisect_left(self.bounds, value)] += 1  # the first bucket with value <= bound
        counts[-1] += value

    def count(self, labels: Labels) -> float:
        """Observations in the series (0 if none)."""
        counts = self.series.get(labels)
        return 0.0 if counts is None else sum(counts[:-1])

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        name = self.name
        for labels, counts in list(self.series.items()):
            counts = list(counts)
            shown = self._labels(labels)
            total = 0.0
            for le, n in zip(self._le, counts, strict=False):  # counts[-1] is the sum, not a bucket
                total += n
                family.add_sample(name + "_bucket", {**shown, "le": le}, total)
            family.add_sample(name + "_count", shown, total)
            family.add_sample(name + "_sum", shown, counts[-1])
            family.add_sample(name + "_created", shown, self.created[labels])
        yield family
