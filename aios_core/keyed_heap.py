"""A min-heap with one live entry per id and lazy deletion: the priority queue of the schedulers and of memory eviction.

``heapq`` cannot remove or re-prioritise an item in place. Here pushing an id
again replaces its previous entry and removing an id only forgets it; the dead
records are skipped when they reach the top, and the heap is rebuilt once dead
records outnumber live ones, so a queue of many cancelled or re-ranked items
does not grow without bound. Push, pop and remove are O(log n) amortised.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: dead records tolerated before a rebuild is considered (small heaps are never rebuilt)
_SLACK = 64


class KeyedHeap(Generic[T]):
    """Items ordered by a key fixed at push time (smallest first, ties in push order); one live entry per ``id_of(item)``."""

    def __init__(self, id_of: Callable[[T], Hashable] = lambda item: item.id) -> None:  # type: ignore[attr-defined]
        self._id_of = id_of
        self._heap: list[tuple[Any, int, T]] = []
        #: id -> push counter of its live record
        self._live: dict[Hashable, int] = {}
        self._counter = itertools.count()

    def push(self, item: T, key: Any) -> None:
        """Add ``item`` under ``key``; an earlier entry of the same id is replaced."""
        token = next(self._counter)
        self._live[self._id_of(item)] = token
        heapq.heappush(self._heap, (key, token, item))
        if len(self._heap) > _SLACK and len(self._heap) > 2 * len(self._live):
            self._compact()

    def _is_live(self, record: tuple[Any, int, T]) -> bool:
        return self._live.get(self._id_of(record[2])) == record[1]

    def _clean(self) -> None:
        heap = self._heap
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)

    def _compact(self) -> None:
        self._heap = [r for r in self._heap if self._is_live(r)]
        heapq.heapify(self._heap)

    def peek(self) -> T | None:
        if not self._live:
            # the common case for a scheduler's idle levels: one check, and dead records go at once
            self._heap.clear()
            return None
        self._clean()
        return self._heap[0][2] if self._heap else None

    def peek_key(self) -> Any:
        self._clean()
        return self._heap[0][0] if self._heap else None

    def pop(self, *, skip: T | None = None) -> T | None:
        """Remove and return the item with the smallest key; ``skip`` (if on top) stays where it is and the next one goes."""
        self._clean()
        if not self._heap:
            return None
        if skip is not None and self._heap[0][2] is skip:
            held = heapq.heappop(self._heap)
            try:
                return self.pop()
            finally:
                heapq.heappush(self._heap, held)
        _, _, item = heapq.heappop(self._heap)
        del self._live[self._id_of(item)]
        return item

    def remove(self, item: T) -> bool:
        """Forget ``item``'s entry; False when it had none."""
        found = self._live.pop(self._id_of(item), None) is not None
        # keep the heap from filling with dead entries when many items are removed
        if found and len(self._heap) > _SLACK and len(self._heap) > 2 * len(self._live):
            self._compact()
        return found

    def __contains__(self, item: T) -> bool:
        return self._id_of(item) in self._live

    def __len__(self) -> int:
        return len(self._live)
