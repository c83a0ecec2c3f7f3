"""A plain-data histogram for the pure cores (health scheduler, lock), and its export.

The cores must not import prometheus_client or hold its locks: they count into a
``Histogram`` and the collectors render it at scrape time with ``add_to``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Histogram:
    """Cumulative-bucket counts, as Prometheus exports them (``counts[i]``: <= bounds[i])."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last: +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def cumulative(self) -> list[int]:
        out, run = [], 0
        for c in self.counts:
            run += c
            out.append(run)
        return out


def add_to(family: Any, labels: list[str], h: Histogram) -> None:
    """Add ``h`` as one sample set of a prometheus ``HistogramMetricFamily``."""
    cumulative = h.cumulative()
    buckets = [(str(b), c) for b, c in zip(h.bounds, cumulative, strict=False)]
    buckets.append(("+Inf", cumulative[-1]))
    family.add_metric(labels, buckets, h.total)
