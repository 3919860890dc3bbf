"""Static priority with aging, so that low-priority agents are never starved.

A waiting job's effective priority is ``priority + aging * seconds_waited``.
Comparing two waiting jobs, ``p1 + r(now - e1) > p2 + r(now - e2)`` reduces to
``p1 - r*e1 > p2 - r*e2``: the order does not change while they wait, so a heap
keyed at push time stays correct.
"""

from __future__ import annotations

from aios_core.scheduler.base import Job
from aios_core.scheduler.queues import KeyedHeap
from aios_core.scheduler.single_queue import SingleQueueScheduler


class PriorityScheduler(SingleQueueScheduler[KeyedHeap[Job]]):
    name = "priority"
    description = "highest priority first, aged by waiting time; preempts a lower-priority job after `min_slice` tokens"

    def __init__(self, *, aging: float = 1.0, min_slice: int = 16, **options: float) -> None:
        super().__init__(KeyedHeap[Job](), **options)
        if aging < 0:
            raise ValueError("aging must be >= 0 (priority points per second waited)")
        self.aging = float(aging)
        self.min_slice = int(min_slice)

    def effective(self, job: Job, now: float) -> float:
        return job.priority + self.aging * (now - job.enqueued_at)

    def push(self, job: Job, now: float) -> None:
        self._queue.push(job, (-(job.priority - self.aging * job.enqueued_at), job.seq))

    def should_preempt(self, running: Job, now: float) -> bool:
        best = self._queue.peek()
        if best is None or running.slice_tokens < self.min_slice:
            return False
        return self.effective(best, now) > running.priority

    def victim_rank(self, running: Job, now: float) -> tuple[float, ...]:
        return (-running.priority, running.slice_tokens)
