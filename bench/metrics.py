"""Metrics of design.md section 3, computed the same way for every setup."""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from typing import Any


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


def per_round_ratios(rounds: Sequence[dict[str, Any]], baseline: str, ours: str = "aios", key: str = "makespan") -> list[float]:
    """``baseline``'s value over ``ours`` in every round both ran (above 1: ours is faster), in round order.

    Each round record has ``round``, ``setup`` and ``key``; rounds alternate the setups' order, so a ratio
    per round shows how steady the comparison was, next to the ratio of medians.
    """
    ratios = []
    for i in sorted({r["round"] for r in rounds}):
        theirs = next((r for r in rounds if r["round"] == i and r["setup"] == baseline), None)
        mine = next((r for r in rounds if r["round"] == i and r["setup"] == ours), None)
        if theirs and mine and mine[key] > 0:
            ratios.append(theirs[key] / mine[key])
    return ratios


def counter_changes(before: Mapping[str, float], after: Mapping[str, float], gauges: Collection[str] = ()) -> dict[str, float]:
    """What a round did to an engine: each cumulative counter's growth, each gauge (a state) as at the end.

    A counter missing before the round started at 0 (a core that made it during the round).
    """
    return {k: v if k in gauges else round(v - before.get(k, 0), 6) for k, v in after.items()}
