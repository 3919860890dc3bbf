"""Queue structures the policies are built from: FIFO with O(1) removal and a keyed heap with lazy deletion.

:class:`KeyedHeap` is the project's one lazy-deletion heap (:mod:`aios_core.keyed_heap`),
also used by memory eviction; policies keep importing it from here.
"""

from __future__ import annotations

from collections import OrderedDict

from aios_core.keyed_heap import KeyedHeap
from aios_core.scheduler.base import Job

__all__ = ["FifoQueue", "KeyedHeap"]


class FifoQueue:
    """Arrival order; removal of any job in O(1)."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def push(self, job: Job) -> None:
        self._jobs[job.id] = job

    def push_front(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._jobs.move_to_end(job.id, last=False)

    def pop(self) -> Job | None:
        if not self._jobs:
            return None
        return self._jobs.popitem(last=False)[1]

    def peek(self) -> Job | None:
        return next(iter(self._jobs.values()), None)

    def remove(self, job: Job) -> bool:
        return self._jobs.pop(job.id, None) is not None

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._jobs.values())
