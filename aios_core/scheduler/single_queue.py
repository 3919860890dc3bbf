"""Policies whose waiting jobs live in one queue: FIFO and round robin (arrival order), priority and SRPT (a keyed heap).

Such a policy differs from its siblings only in where :meth:`push` puts a job
and in when it preempts; taking the next job, looking at it, cancelling one and
counting them are the queue's own operations, delegated here once.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from aios_core.scheduler.base import Job, Scheduler


class JobQueue(Protocol):
    """What a single-queue policy needs of its queue (:class:`~aios_core.scheduler.queues.FifoQueue` and ``KeyedHeap`` have it)."""

    def pop(self) -> Job | None: ...

    def peek(self) -> Job | None: ...

    def remove(self, job: Job) -> bool: ...

    def __len__(self) -> int: ...


Q = TypeVar("Q", bound=JobQueue)


class SingleQueueScheduler(Scheduler, Generic[Q]):
    """A policy over one queue ``self._queue``; subclasses define :meth:`push` (and preemption)."""

    def __init__(self, queue: Q, **options: Any) -> None:
        super().__init__(**options)
        self._queue = queue

    def pop(self, now: float) -> Job | None:
        return self._queue.pop()

    def peek(self, now: float) -> Job | None:
        return self._queue.peek()

    def remove(self, job: Job) -> bool:
        return self._queue.remove(job)

    def __len__(self) -> int:
        return len(self._queue)
