"""PLAS: program-level least attained service (Autellix, arXiv 2502.13965).

An agent's calls form a program. A call is ranked by the service its whole
program has attained so far (tokens, see :class:`Scheduler`), not by the call
alone, so a short program is not stuck behind the many calls of a long one.
Service is discretised into geometric levels (a multi-level feedback queue):
jobs in one level run first-come-first-served, a job whose program crosses a
threshold drops a level, and a running job yields (after ``min_slice`` tokens)
when a job of a lower level waits.

Least-attained-service alone starves long programs while short ones keep
arriving. A call that has waited more than ``max_wait`` seconds, or (optional,
as in Autellix) whose program has waited more than ``starvation_ratio`` times
the time it ran, is starving: it is served before every level (oldest first)
and may preempt. This bounds how long any call waits while short programs
still go first. The price is the one LAS always pays: the very longest
programs finish later than under FIFO (see docs/benchmarks.md).
"""

from __future__ import annotations

import math

from aios_core.scheduler.base import Job, Scheduler
from aios_core.scheduler.queues import FifoQueue


class PLASScheduler(Scheduler):
    name = "plas"
    description = "program-level least attained service (Autellix); the default"

    def __init__(
        self,
        *,
        base: float = 64.0,
        levels: int = 12,
        min_slice: int = 16,
        starvation_ratio: float | None = None,
        min_service: float = 1.0,
        max_wait: float | None = 120.0,
        scan: int = 64,
        **options: float,
    ) -> None:
        super().__init__(**options)
        if base <= 0 or levels < 1:
            raise ValueError("base must be > 0 and levels >= 1")
        self.base = float(base)
        self.levels = int(levels)
        self.min_slice = int(min_slice)
        self.starvation_ratio = starvation_ratio
        self.min_service = min_service
        self.max_wait = max_wait
        self.scan = scan
        self._queues = [FifoQueue() for _ in range(self.levels)]
        self._level_of: dict[str, int] = {}
        self._all = FifoQueue()  # arrival order across levels, for the starvation guard

    def level(self, program: str) -> int:
        attained = self.attained(program)
        if attained < self.base:
            return 0
        return min(self.levels - 1, 1 + int(math.log2(attained / self.base)))

    def push(self, job: Job, now: float) -> None:
        lvl = self.level(job.program)
        self._queues[lvl].push(job)
        self._level_of[job.id] = lvl
        self._all.push(job)

    def is_starving(self, job: Job, now: float) -> bool:
        if self.max_wait is not None and now - job.enqueued_at > self.max_wait:
            return True
        if self.starvation_ratio is None:
            return False
        stats = self._programs.get(job.program)
        if stats is None:
            return False
        waited = stats.wait_s + max(0.0, now - job.enqueued_at)
        return waited > self.starvation_ratio * max(stats.service_s, self.min_service)

    def _starving(self, now: float) -> Job | None:
        # the oldest waiters are the candidates; looking at a bounded prefix keeps peek O(scan)
        for i, job in enumerate(self._all):
            if i >= self.scan:
                break
            if self.is_starving(job, now):
                return job
        return None

    def peek(self, now: float) -> Job | None:
        starving = self._starving(now)
        if starving is not None:
            return starving
        for lvl, queue in enumerate(self._queues):
            while True:
                job = queue.peek()
                if job is None:
                    break
                actual = self.level(job.program)
                if actual == lvl:
                    return job
                # its program gained service while it waited (parallel calls): demote lazily
                queue.remove(job)
                self._queues[actual].push(job)
                self._level_of[job.id] = actual
        return None

    def pop(self, now: float) -> Job | None:
        job = self.peek(now)
        if job is not None:
            self.remove(job)
        return job

    def remove(self, job: Job) -> bool:
        lvl = self._level_of.pop(job.id, None)
        if lvl is None:
            return False
        self._queues[lvl].remove(job)
        self._all.remove(job)
        return True

    def __len__(self) -> int:
        return len(self._level_of)

    def should_preempt(self, running: Job, now: float) -> bool:
        if running.slice_tokens < self.min_slice:
            return False
        best = self.peek(now)
        if best is None:
            return False
        if self.is_starving(best, now):
            return not self.is_starving(running, now)
        return self.level(best.program) < self.level(running.program)

    def victim_rank(self, running: Job, now: float) -> tuple[float, ...]:
        # evict the program that has had the most service: the essence of least-attained-service
        return (self.level(running.program), self.attained(running.program))
