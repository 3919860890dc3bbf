"""Round robin with a time slice counted in generated tokens and real preemption.

When a running job has generated ``quantum`` tokens in its slice and another
job waits, the kernel snapshots the running job (its KV state stays intact)
and puts it at the back of the queue; it resumes later without recomputation.
The reference AIOS implementation's round robin restarted generations from
scratch; this one never does.
"""

from __future__ import annotations

from aios_core.scheduler.base import Job, Scheduler
from aios_core.scheduler.queues import FifoQueue


class RoundRobinScheduler(Scheduler):
    name = "rr"
    description = "round robin; time slice of `quantum` generated tokens, preempted jobs resume from a snapshot"

    def __init__(self, *, quantum: int = 32, **options: float) -> None:
        super().__init__(**options)
        if quantum < 1:
            raise ValueError("quantum must be at least 1 token")
        self.quantum = int(quantum)
        self._queue = FifoQueue()

    def push(self, job: Job, now: float) -> None:
        self._queue.push(job)

    def pop(self, now: float) -> Job | None:
        return self._queue.pop()

    def peek(self, now: float) -> Job | None:
        return self._queue.peek()

    def remove(self, job: Job) -> bool:
        return self._queue.remove(job)

    def __len__(self) -> int:
        return len(self._queue)

    def should_preempt(self, running: Job, now: float) -> bool:
        return running.slice_tokens >= self.quantum
