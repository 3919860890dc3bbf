"""First come, first served: no preemption. The baseline every other policy is measured against."""

from __future__ import annotations

from aios_core.scheduler.base import Job
from aios_core.scheduler.queues import FifoQueue
from aios_core.scheduler.single_queue import SingleQueueScheduler


class FifoScheduler(SingleQueueScheduler[FifoQueue]):
    name = "fifo"
    description = "first come, first served; a job runs to completion once started"

    def __init__(self, **options: float) -> None:
        super().__init__(FifoQueue(), **options)

    def push(self, job: Job, now: float) -> None:
        if job.preemptions:
            # only reached when a job is requeued after a core failure: it keeps its place
            self._queue.push_front(job)
        else:
            self._queue.push(job)
