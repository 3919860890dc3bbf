"""The KV-cache books of a unified cache shared by many sequences: who is promised how many cells.

Kept apart from the engine that steps the model (as vLLM keeps its KV cache
manager apart from its scheduler), with no llama.cpp import, so the rules can
be tested without a model:

* **Admission.** A sequence is promised its prompt plus ``decode_reserve``
  cells (never more than ``prompt + max_tokens``), minus the leading cells it
  shares with a cached prefix. It gets a slot only when its promise fits.
* **Growth.** While it decodes, its promise grows in steps of
  ``decode_reserve`` up to its limit. Reserving all of ``max_tokens`` up front
  would let a few requests with a large ``max_tokens`` hold the cache idle.
* **Making room.** Cells held by cached prefixes (a :class:`CellHolder`)
  count against the capacity; when a promise does not fit, unused cached
  prefixes are evicted (the holder decides the order, least recently used
  first) until it does, or refused when nothing more can go.
* **Pausing.** A sequence that cannot grow is paused by the engine (a
  snapshot); its cells are given back and the ledger remembers what it needs
  to resume, so admission checks can count it.

Invariant: ``0 <= reserved`` and ``reserved + holder.cells() <= capacity``
after every successful :meth:`KVLedger.make_room`; slots are never handed out
twice.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

#: most paused sequences remembered (older ones are forgotten: they re-compute their need from their snapshot)
MAX_PAUSED = 10_000


class CellHolder(Protocol):
    """Cells held outside any sequence's promise (cached prefixes) that can be given back on demand."""

    def cells(self) -> int:
        """Cells held now (including ones still shared by running sequences)."""
        ...

    def evictable_cells(self) -> int:
        """Cells that :meth:`evict_unused` could give back (nobody uses them)."""
        ...

    def evict_unused(self, *, keep: Any = None) -> bool:
        """Give back the cells of one unused holding other than ``keep``; False when there is none."""
        ...


@dataclass(eq=False)
class KVGrant:
    """The cells promised to one sequence (its own cells, beyond the prefix it shares)."""

    #: most tokens the sequence may reach: prompt + max_tokens
    limit: int
    #: leading cells shared with a cached prefix (not part of the promise)
    shared: int
    #: cells promised so far
    cells: int

    def covers(self, n_tokens: int) -> bool:
        """Whether the promise holds a sequence of ``n_tokens`` tokens."""
        return n_tokens - self.shared <= self.cells


class KVLedger:
    """Promised cells, free slots and paused sequences' needs for one KV cache of ``capacity`` cells."""

    def __init__(self, capacity: int, slots: list[int], decode_reserve: int, holder: CellHolder) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 (got {capacity})")
        if decode_reserve < 1:
            raise ValueError(f"decode_reserve must be at least 1 (got {decode_reserve})")
        self.capacity = capacity
        self.decode_reserve = decode_reserve
        self.holder = holder
        self._all_slots = list(slots)
        self._free: list[int] = list(reversed(self._all_slots))
        self._reserved = 0
        #: cells a paused sequence needs to resume (generation id -> cells), oldest first
        self._paused: OrderedDict[str, int] = OrderedDict()

    # ------------------------------------------------------------------ reading

    @property
    def reserved(self) -> int:
        """Cells promised to admitted sequences."""
        return self._reserved

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def has_slot(self) -> bool:
        return bool(self._free)

    def committed(self) -> int:
        """Cells promised to sequences plus cells held that nobody could give back."""
        return self._reserved + self.holder.cells() - self.holder.evictable_cells()

    def fits(self, need: int) -> bool:
        """Whether ``need`` more cells could be promised (after evicting every unused holding)."""
        return self.committed() + need <= self.capacity

    def first_reserve(self, n_tokens: int, limit: int, shared: int = 0) -> int:
        """Cells to promise a sequence of ``n_tokens`` (at most ``limit``) that shares ``shared`` of them."""
        return min(limit, n_tokens + self.decode_reserve) - shared

    def paused_need(self, gen_id: str) -> int | None:
        """Cells a sequence paused by :meth:`pause` needs to resume (None: not paused here)."""
        return self._paused.get(gen_id)

    # ------------------------------------------------------------------ changing

    def make_room(self, need: int, keep: Any = None) -> bool:
        """Evict unused holdings (never ``keep``) until ``need`` more cells fit; False when they cannot."""
        while self._reserved + self.holder.cells() + need > self.capacity:
            if not self.holder.evict_unused(keep=keep):
                return False
        return True

    def claim(self, n_tokens: int, limit: int, shared: int = 0) -> tuple[int, KVGrant]:
        """Take a free slot and promise its first cells; call after :meth:`make_room` for them succeeded."""
        if not self._free:
            raise RuntimeError("no free slot: check has_slot() before claiming")
        grant = KVGrant(limit=limit, shared=shared, cells=self.first_reserve(n_tokens, limit, shared))
        if grant.cells < 0:
            raise ValueError(f"a sequence of {n_tokens} tokens cannot share {shared} cells")
        slot = self._free.pop()
        self._reserved += grant.cells
        return slot, grant

    def grow(self, grant: KVGrant) -> bool:
        """Promise ``grant`` up to ``decode_reserve`` more cells; False at its limit or when the cache has no room."""
        more = min(self.decode_reserve, grant.limit - grant.shared - grant.cells)
        if more <= 0 or not self.make_room(more):
            return False
        grant.cells += more
        self._reserved += more
        return True

    def give_back(self, grant: KVGrant) -> None:
        """The sequence no longer holds its promise (it ended, was paused or cancelled)."""
        self._reserved -= grant.cells
        grant.cells = 0

    def free_slot(self, slot: int) -> None:
        """The slot's cells are gone from the cache: it can be handed out again."""
        if slot in self._free or slot not in self._all_slots:
            raise ValueError(f"slot {slot} is not a taken slot of this ledger")
        self._free.append(slot)

    def pause(self, gen_id: str, n_tokens: int, limit: int) -> None:
        """Remember what a paused sequence of ``n_tokens`` needs to resume (its own promise is given back separately)."""
        self._paused[gen_id] = self.first_reserve(n_tokens, limit)
        self._paused.move_to_end(gen_id)
        while len(self._paused) > MAX_PAUSED:
            self._paused.popitem(last=False)

    def forget_paused(self, gen_id: str) -> None:
        self._paused.pop(gen_id, None)

    def clear(self, *, paused: bool = False) -> None:
        """Every slot free and nothing promised (the KV memory was emptied); ``paused`` also forgets paused needs."""
        self._free = list(reversed(self._all_slots))
        self._reserved = 0
        if paused:
            self._paused.clear()
