"""The llama.cpp core's cache of system-prompt prefixes.

Agents of one kind send the same (often long) system prompt with every call.
After one request has computed it, its KV cells are also tagged with a
reserved sequence slot; ``llama_memory_seq_cp`` in a unified KV cache shares
cells instead of copying them, so holding a prefix costs nothing while a
sequence that computed it is alive, and a later request that starts with the
same tokens gets them for free. Matching is token-exact (the longest common
prefix), so it works for any chat template.

Entries are evicted least-recently-used when their slots are needed or the
cells are needed for admission; an entry evicted while running sequences
still share its cells stays counted (as a "ghost") until the last of them ends.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import llama_cpp as L
import numpy as np

#: shorter shared prefixes are not worth a cache entry (every Gemma prompt shares its first 4 tokens)
MIN_SHARED_PREFIX = 16


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    m = min(a.shape[0], b.shape[0])
    if m == 0:
        return 0
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if diff.size else m



@dataclass(eq=False)
class PrefixEntry:
    slot: int
    tokens: np.ndarray
    #: set by the engine thread once its cells are tagged with ``slot``
    ready: bool = False
    users: int = 0
    hits: int = 0
    evicted: bool = False


class PrefixCache:
    """Recent system prompts whose KV stays tagged with reserved sequence slots (LRU)."""

    def __init__(self, slots: list[int]) -> None:
        self.free = list(reversed(slots))
        self.entries: OrderedDict[int, PrefixEntry] = OrderedDict()
        #: evicted entries whose cells are still shared by running sequences
        self.ghosts: list[PrefixEntry] = []
        self.hits = 0
        self.published = 0
        self.evictions = 0

    def match(self, tokens: np.ndarray) -> tuple[PrefixEntry | None, int]:
        """The entry sharing the longest prefix with ``tokens`` (leaving at least one token to decode)."""
        best, best_n = None, 0
        limit = tokens.shape[0] - 1
        for entry in self.entries.values():
            if not entry.ready:
                continue
            n = min(common_prefix(entry.tokens, tokens), limit)
            if n > best_n:
                best, best_n = entry, n
        if best_n < MIN_SHARED_PREFIX:
            return None, 0
        return best, best_n

    def covers(self, prefix: np.ndarray) -> bool:
        """Whether an entry (ready or being published) already starts with all of ``prefix``."""
        n = prefix.shape[0]
        return any(e.tokens.shape[0] >= n and common_prefix(e.tokens, prefix) == n for e in self.entries.values())

    def cells(self) -> int:
        return sum(e.tokens.shape[0] for e in self.entries.values()) + sum(e.tokens.shape[0] for e in self.ghosts)

    def evictable_cells(self) -> int:
        return sum(e.tokens.shape[0] for e in self.entries.values() if e.users == 0)

    def evict(self, entry: PrefixEntry, mem: Any) -> None:
        del self.entries[entry.slot]
        L.llama_memory_seq_rm(mem, entry.slot, -1, -1)
        entry.evicted = True
        if entry.users > 0:
            self.ghosts.append(entry)
        self.free.append(entry.slot)
        self.evictions += 1

    def evict_unused(self, mem: Any, *, keep: PrefixEntry | None = None) -> bool:
        """Evict the least recently used entry nobody shares; False when there is none."""
        for entry in self.entries.values():
            if entry.users == 0 and entry is not keep:
                self.evict(entry, mem)
                return True
        return False

    def reserve(self, tokens: np.ndarray, mem: Any) -> PrefixEntry | None:
        """A new (not yet ready) entry for ``tokens``, evicting the least recently used one if all slots are taken.

        Entries still being published are never evicted (their slot is about
        to receive cells in this very step); None when every slot holds one.
        """
        if not self.free:
            ready = [e for e in self.entries.values() if e.ready]
            victim = next((e for e in ready if e.users == 0), None) or (ready[0] if ready else None)
            if victim is None:
                return None
            self.evict(victim, mem)
        entry = PrefixEntry(slot=self.free.pop(), tokens=tokens)
        self.entries[entry.slot] = entry
        self.published += 1
        return entry

    def adopt(self, tokens: np.ndarray, slot: int, mem: Any) -> PrefixEntry | None:
        """Make the cells of ``tokens``, already computed in sequence ``slot``, a ready entry (unless one covers them).

        Between steps only: the cells are tagged with the entry's slot at once.
        """
        if self.covers(tokens):
            return None
        entry = self.reserve(tokens, mem)
        if entry is not None:
            L.llama_memory_seq_cp(mem, slot, entry.slot, 0, tokens.shape[0])
            entry.ready = True
        return entry

    def use(self, entry: PrefixEntry) -> None:
        entry.users += 1
        entry.hits += 1
        self.hits += 1
        self.entries.move_to_end(entry.slot)

    def unuse(self, entry: PrefixEntry) -> None:
        entry.users -= 1
        if entry.evicted and entry.users == 0 and entry in self.ghosts:
            self.ghosts.remove(entry)

    def clear(self, slots: list[int]) -> None:
        self.entries.clear()
        self.ghosts.clear()
        self.free = list(reversed(slots))
