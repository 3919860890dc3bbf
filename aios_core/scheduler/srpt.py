"""Shortest remaining processing time with known lengths: the ceiling the study compares against.

It needs each call's ``hint_tokens`` (what its program still has to generate),
which real agents do not know; the bench supplies it from the workload trace.
Jobs without a hint rank last.
"""

from __future__ import annotations

from aios_core.scheduler.base import Job
from aios_core.scheduler.queues import KeyedHeap
from aios_core.scheduler.single_queue import SingleQueueScheduler

_UNKNOWN = float("inf")


class SRPTScheduler(SingleQueueScheduler[KeyedHeap[Job]]):
    name = "srpt"
    description = "shortest remaining processing time using hint_tokens (an oracle, for studies)"

    def __init__(self, *, min_slice: int = 16, **options: float) -> None:
        super().__init__(KeyedHeap[Job](), **options)
        self.min_slice = int(min_slice)

    @staticmethod
    def remaining(job: Job) -> float:
        return _UNKNOWN if job.hint_tokens is None else job.hint_tokens

    def push(self, job: Job, now: float) -> None:
        self._queue.push(job, (self.remaining(job), job.seq))

    def should_preempt(self, running: Job, now: float) -> bool:
        if running.slice_tokens < self.min_slice:
            return False
        best = self._queue.peek()
        return best is not None and self.remaining(best) < self.remaining(running)

    def victim_rank(self, running: Job, now: float) -> tuple[float, ...]:
        return (self.remaining(running),)
