"""The Gittins index of a program's attained service, learned from the programs the kernel has seen.

Least attained service is the right order only when programs that have run
longer are likely to run much longer still (a decreasing hazard: heavy-tailed
agents). When programs are alike (every agent a few turns of the same size),
it is the wrong order: it shares the engine among all of them and every one
finishes late, where first come first served would finish most early. The
Gittins index (Gittins 1989; Scully et al., SOAP, 2018) is the policy that
minimises mean completion time for job sizes drawn from a known distribution
without knowing any one size, and it is LAS on heavy tails and FCFS on light
ones. Here the distribution is learned from the last ``window`` programs that
ended (their total service in the scheduler's token units), so the order
follows the workload the kernel actually serves.

Programs that have not ended count too, as censored samples (their size is at
least the service they have had): the size distribution is the Kaplan-Meier
estimate. Without them the first programs to end, the short ones, would be
the whole sample, and a long program would look as if it should have ended
long ago, exactly while the kernel warms up and most programs still run.

For attained service ``a``, with ``S`` the estimated survival function, the
index is ``max over t > a of (S(a) - S(t)) / integral_a^t S(u) du``: the best
rate at which service spent from here completes programs (completions per
token). Only ends that were seen count, so a program beyond every ended one
gets the index of the largest size seen (nothing known says it ends soon).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable


class GittinsIndex:
    """Gittins indices of attained service under the size distribution of recent programs (ended and running)."""

    def __init__(self, *, window: int = 1000, min_samples: int = 20, resolution: float = 1.1) -> None:
        if window < 1 or min_samples < 1 or resolution <= 1.0:
            raise ValueError("window and min_samples must be >= 1 and resolution > 1")
        self.window = window
        self.min_samples = min_samples
        self.resolution = resolution
        self._recent: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []
        self._censored: list[float] = []
        # the Kaplan-Meier estimate: distinct sizes at which programs ended, and the survival just after each
        self._times: list[float] = []
        self._survival: list[float] = []
        self._memo: dict[int, float] = {}
        self._stale = False

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
        self._changed()

    def set_running(self, attained: Iterable[float]) -> None:
        """The service of the programs that have not ended (at most ``window`` of them count): censored samples."""
        values = sorted(a for a in attained if a > 0 and math.isfinite(a))
        self._censored = values[-self.window:]
        self._changed()

    def _changed(self) -> None:
        # estimated when next asked for, so that many programs ending at once cost one estimate
        self._stale = True
        self._memo.clear()

    def _estimate(self) -> None:
        self._stale = False
        ended, censored = self._sorted, self._censored
        times: list[float] = []
        survival: list[float] = []
        s = 1.0
        i = 0
        while i < len(ended):
            t = ended[i]
            j = bisect.bisect_right(ended, t, i)
            # at risk at t: every program whose size is known to reach t (ended there or later, or still running past it)
            at_risk = (len(ended) - i) + (len(censored) - bisect.bisect_left(censored, t))
            s *= 1.0 - (j - i) / at_risk
            times.append(t)
            survival.append(s)
            i = j
        self._times, self._survival = times, survival

    def _bucket(self, attained: float) -> int:
        return -1 if attained < 1 else int(math.log(attained) / math.log(self.resolution))

    def index(self, attained: float) -> float:
        """Completions per unit of service to expect from here on (higher: serve first)."""
        bucket = self._bucket(attained)
        cached = self._memo.get(bucket)
        if cached is not None:
            return cached
        if self._stale:
            self._estimate()
        # evaluate at the bucket's lower edge, so every attained value of a bucket shares one index
        a = 0.0 if bucket < 0 else self.resolution**bucket
        times, survival = self._times, self._survival
        k = bisect.bisect_right(times, a)
        s_a = survival[k - 1] if k > 0 else 1.0
        if k == len(times) or s_a <= 0.0:
            largest = max(self._sorted[-1] if self._sorted else 1.0, self._censored[-1] if self._censored else 1.0)
            value = 1.0 / max(1.0, largest)
        else:
            best = 0.0
            area = 0.0
            prev_t, prev_s = a, s_a
            for t, s in zip(times[k:], survival[k:]):
                area += prev_s * (t - prev_t)
                best = max(best, (s_a - s) / area)
                prev_t, prev_s = t, s
            value = best
        self._memo[bucket] = value
        return value
