"""The Gittins index of a program's attained service, learned from the programs that have ended.

Least attained service is the right order only when programs that have run
longer are likely to run much longer still (a decreasing hazard: heavy-tailed
agents). When programs are alike (every agent a few turns of the same size),
it is the wrong order: it shares the engine among all of them and every one
finishes late, where first come first served would finish most early. The
Gittins index (Gittins 1989; Scully et al., SOAP, 2018) is the policy that
minimises mean completion time for job sizes drawn from a known distribution
without knowing any one size, and it is LAS on heavy tails and FCFS on light
ones. Here the distribution is the empirical one of the last ``window``
programs that ended (their total service in the scheduler's token units), so
the order follows the workload the kernel actually serves.

For attained service ``a`` and the survivors' remaining sizes ``r = s - a`` of
the sampled programs with ``s > a``, the index is
``max over d of P(r <= d) / E[min(r, d)]``: the best rate at which service
spent from here completes programs. A program beyond every sample gets the
index of the largest remaining work seen (nothing known says it ends soon).
"""

from __future__ import annotations

import bisect
import math
from collections import deque


class GittinsIndex:
    """Gittins indices of attained service under the empirical size distribution of recent programs."""

    def __init__(self, *, window: int = 1000, min_samples: int = 20, resolution: float = 1.1) -> None:
        if window < 1 or min_samples < 1 or resolution <= 1.0:
            raise ValueError("window and min_samples must be >= 1 and resolution > 1")
        self.window = window
        self.min_samples = min_samples
        self.resolution = resolution
        self._recent: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []
        self._memo: dict[int, float] = {}

    @property
    def ready(self) -> bool:
        """Enough programs have ended for the learned distribution to be used."""
        return len(self._sorted) >= self.min_samples

    def observe(self, size: float) -> None:
        """A program ended after ``size`` units of service."""
        if size <= 0 or not math.isfinite(size):
            return
        if len(self._recent) == self.window:
            old = self._recent[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._recent.append(size)
        bisect.insort(self._sorted, size)
        self._memo.clear()

    def _bucket(self, attained: float) -> int:
        return -1 if attained < 1 else int(math.log(attained) / math.log(self.resolution))

    def index(self, attained: float) -> float:
        """Completions per unit of service to expect from here on (higher: serve first)."""
        bucket = self._bucket(attained)
        cached = self._memo.get(bucket)
        if cached is not None:
            return cached
        # evaluate at the bucket's lower edge, so every attained value of a bucket shares one index
        a = 0.0 if bucket < 0 else self.resolution**bucket
        sizes = self._sorted
        start = bisect.bisect_right(sizes, a)
        remaining = [s - a for s in sizes[start:]]
        if not remaining:
            value = 1.0 / max(1.0, (sizes[-1] if sizes else 1.0))
        else:
            n = len(remaining)
            best = 0.0
            prefix = 0.0
            for j, r in enumerate(remaining, 1):
                prefix += r
                if j < n and remaining[j] == r:
                    continue  # evaluate a quantum only after all survivors that end exactly there
                best = max(best, j / (prefix + (n - j) * r))
            value = best
        self._memo[bucket] = value
        return value
