"""Queue structures the policies are built from: FIFO with O(1) removal and a keyed heap with lazy deletion."""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from typing import Any

from aios_core.scheduler.base import Job


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


class KeyedHeap:
    """Min-heap of jobs by a key fixed at push time; removal is lazy (O(log n) amortised)."""

    def __init__(self) -> None:
        self._heap: list[tuple[Any, int, Job]] = []
        self._live: dict[str, int] = {}
        self._counter = itertools.count()

    def push(self, job: Job, key: Any) -> None:
        token = next(self._counter)
        self._live[job.id] = token
        heapq.heappush(self._heap, (key, token, job))

    def _clean(self) -> None:
        heap = self._heap
        while heap and self._live.get(heap[0][2].id) != heap[0][1]:
            heapq.heappop(heap)

    def peek(self) -> Job | None:
        self._clean()
        return self._heap[0][2] if self._heap else None

    def peek_key(self) -> Any:
        self._clean()
        return self._heap[0][0] if self._heap else None

    def pop(self) -> Job | None:
        self._clean()
        if not self._heap:
            return None
        _, _, job = heapq.heappop(self._heap)
        del self._live[job.id]
        return job

    def remove(self, job: Job) -> bool:
        found = self._live.pop(job.id, None) is not None
        # keep the heap from filling with dead entries when many jobs are cancelled
        if found and len(self._heap) > 64 and len(self._heap) > 2 * len(self._live):
            self._heap = [e for e in self._heap if self._live.get(e[2].id) == e[1]]
            heapq.heapify(self._heap)
        return found

    def __len__(self) -> int:
        return len(self._live)
