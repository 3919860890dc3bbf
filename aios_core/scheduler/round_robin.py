"""Round robin with a time slice counted in generated tokens and real preemption.

When a running job has generated ``quantum`` tokens in its slice and another
job waits, the kernel snapshots the running job (its KV state stays intact)
and puts it at the back of the queue; it resumes later without recomputation.
The reference AIOS implementation's round robin restarted generations from
scratch; this one never does.
"""

from __future__ import annotations

from aios_core.scheduler.base import Job
from aios_core.scheduler.queues import FifoQueue
from aios_core.scheduler.single_queue import SingleQueueScheduler


class RoundRobinScheduler(SingleQueueScheduler[FifoQueue]):
    name = "rr"
    description = "round robin; time slice of `quantum` generated tokens, preempted jobs resume from a snapshot"

    def __init__(self, *, quantum: int = 32, **options: float) -> None:
        super().__init__(FifoQueue(), **options)
        if quantum < 1:
            raise ValueError("quantum must be at least 1 token")
        self.quantum = int(quantum)

    def push(self, job: Job, now: float) -> None:
        self._queue.push(job)

    def should_preempt(self, running: Job, now: float) -> bool:
        return running.slice_tokens >= self.quantum
