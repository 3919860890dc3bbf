"""First come, first served: no preemption. The baseline every other policy is measured against."""

from __future__ import annotations

from aios_core.scheduler.base import Job, Scheduler
from aios_core.scheduler.queues import FifoQueue


class FifoScheduler(Scheduler):
    name = "fifo"
    description = "first come, first served; a job runs to completion once started"

    def __init__(self, **options: float) -> None:
        super().__init__(**options)
        self._queue = FifoQueue()

    def push(self, job: Job, now: float) -> None:
        if job.preemptions:
            # only reached when a job is requeued after a core failure: it keeps its place
            self._queue.push_front(job)
        else:
            self._queue.push(job)

    def pop(self, now: float) -> Job | None:
        return self._queue.pop()

    def peek(self, now: float) -> Job | None:
        return self._queue.peek()

    def remove(self, job: Job) -> bool:
        return self._queue.remove(job)

    def __len__(self) -> int:
        return len(self._queue)
