"""Metrics of design.md section 3, computed the same way for every setup."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    if not values:
        return float("nan")
    s, sq = sum(values), sum(v * v for v in values)
    return s * s / (len(values) * sq) if sq else 1.0


def summarize(completion: Sequence[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(completion),
        "p50": percentile(completion, 50),
        "p99": percentile(completion, 99),
    }
