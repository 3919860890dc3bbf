"""The memory manager: agents' short-term memory, bounded in RAM, spilling to storage by LRU-K.

Each agent has a key -> value memory (conversation turns, working notes; any
JSON value). Resident items count against a per-agent and a total byte limit;
past either, the item with the largest backward K-distance (LRU-K: the oldest
K-th most recent access; items seen fewer than K times go first, least
recently used first) is written to the storage manager under
``.aios/memory/<key>`` of its owner and dropped from RAM. Reading an evicted
item reloads it transparently, so an agent sees one memory whatever is
resident. LRU-K rather than LRU keeps items that are used repeatedly (a task
description) from being flushed by a burst of one-off notes.

Retrieval is by key, by recency (``search`` without a query: the most recently
used items) or by similarity (``search`` with a query: resident items scored
in RAM, evicted ones through storage's vector index, merged).

Isolation: an agent addresses another agent's memory only through ``owner``,
and the access manager decides (``memory.read`` / ``memory.write`` on the
owner's name); every decision lands in the audit log.

Concurrency: state changes happen between awaits on the kernel loop, so they
need no lock; storage I/O happens outside them, and an item being written out
stays readable from RAM until its write has committed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from aios_core.errors import AIOSError, InvalidSyscallError, MemoryItemNotFoundError, MemoryManagerError, StorageError
from aios_core.keyed_heap import KeyedHeap
from aios_core.managers.sandbox_paths import SandboxPathError, normalize_path

if TYPE_CHECKING:
    import numpy as np

    from aios_core.managers.access import AccessManager, AgentLike
    from aios_core.managers.embeddings import Embedder
    from aios_core.managers.storage import StorageManager
    from aios_core.syscalls import MemorySyscall

log = logging.getLogger(__name__)

MEMORY_PREFIX = ".aios/memory"


class _Absent:
    """The value of an item that is only in storage (``None`` is a legitimate JSON value)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


class MemoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str = Field(default="lru-k", description="memory manager to use: the built-in 'lru-k' or one a plugin registers (aios plugins)")
    options: dict[str, Any] = Field(default_factory=dict, description="settings of a plugin backend (the built-in one has none)")
    per_agent_limit: int = Field(default=1 << 20, gt=0, description="bytes of one agent's memory kept in RAM")
    total_limit: int = Field(default=64 << 20, gt=0, description="bytes of all agents' memory kept in RAM")
    k: int = Field(default=2, ge=1, le=16, description="K of LRU-K (1 = plain LRU)")
    eviction_retry: float = Field(default=1.0, ge=0, description="seconds to hold off evicting after storage refused a write (e.g. disk full)")
    persist_on_close: bool = Field(default=True, description="write resident items to storage when the kernel stops")


class MemoryItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str
    key: str
    value: Any = None
    created: float
    updated: float
    size: int
    resident: bool = True
    #: similarity to the query (search with a query only)
    score: float | None = None


@dataclass(eq=False)
class _Entry:
    key: str
    size: int
    created: float
    updated: float
    value: Any = ABSENT
    resident: bool = False
    #: changed since it was last written to storage
    dirty: bool = False
    #: logical times of the last K accesses, oldest first
    history: deque[int] = field(default_factory=deque)
    #: bumped whenever the value changes (a finished write clears ``dirty`` only if nothing changed meanwhile)
    revision: int = 0
    vector: "np.ndarray | None" = None
    #: the write to storage in flight for this entry (the value stays readable meanwhile)
    writing: "asyncio.Task[None] | None" = None

    def priority(self, k: int) -> tuple[int, int]:
        last = self.history[-1] if self.history else 0
        kth = self.history[0] if len(self.history) >= k else -1
        return (kth, last)


def _entry_key(entry: _Entry) -> str:
    return entry.key


@dataclass
class _AgentMemory:
    owner: str
    entries: dict[str, _Entry] = field(default_factory=dict)
    resident_bytes: int = 0
    #: resident entries by LRU-K priority (the eviction order); an entry leaves it when evicted or deleted
    heap: KeyedHeap[_Entry] = field(default_factory=lambda: KeyedHeap(_entry_key))
    loaded: "asyncio.Future[None] | None" = None


@dataclass
class MemoryStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    reloads: int = 0
    eviction_failures: int = 0

    def as_dict(self) -> dict[str, float]:
        total = self.hits + self.misses
        return {**self.__dict__, "hit_rate": round(self.hits / total, 4) if total else 0.0}


def _size_of(key: str, value: Any) -> int:
    try:
        return len(key.encode()) + len(json.dumps(value, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidSyscallError(f"memory values must be JSON-serialisable: {exc}") from None


def _text_of(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class MemoryManager:
    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        storage: "StorageManager",
        access: "AccessManager",
        embedder: "Embedder | None" = None,
    ) -> None:
        self.config = config or MemoryConfig()
        self.storage = storage
        self.access = access
        self.embedder = embedder
        self.stats = MemoryStats()
        self.total_resident = 0
        self._agents: dict[str, _AgentMemory] = {}
        self._clock = itertools.count(1)
        self._auto = itertools.count(1)
        #: loop time before which no eviction is tried (storage just failed; memory stays over its limit meanwhile)
        self._hold_evictions_until = 0.0

    # ------------------------------------------------------------------ syscall entry

    async def handle(self, syscall: "MemorySyscall", agent: "AgentLike") -> Any:
        sc = syscall
        owner = sc.owner or agent.name
        if sc.op == "add":
            return await self.add(agent, sc.value, key=sc.key, owner=owner)
        if sc.op == "get":
            if sc.key is None:
                raise InvalidSyscallError("memory get needs a key")
            return await self.get(agent, sc.key, owner=owner)
        if sc.op == "search":
            return await self.search(agent, sc.query, k=sc.k, owner=owner)
        if sc.op == "delete":
            if sc.key is None:
                raise InvalidSyscallError("memory delete needs a key")
            return await self.delete(agent, sc.key, owner=owner)
        if sc.op == "list":
            return await self.list(agent, owner=owner)
        if sc.op == "clear":
            return await self.clear(agent, owner=owner)
        raise InvalidSyscallError(f"unknown memory op {sc.op!r}")

    # ------------------------------------------------------------------ public API (access-checked)

    async def add(self, agent: "AgentLike", value: Any, *, key: str | None = None, owner: str | None = None) -> MemoryItem:
        owner = owner or agent.name
        await self.access.authorize(agent, "memory.write", owner, detail={"op": "add", "key": key})
        if key is None:
            key = f"m{time.time_ns():x}-{next(self._auto)}"
        key = self._clean_key(key)
        size = _size_of(key, value)
        if size > self.config.per_agent_limit:
            raise MemoryManagerError(
                f"a memory item of {size} bytes exceeds the per-agent memory limit ({self.config.per_agent_limit} bytes); store it as a file instead",
                reason="too_large",
            )
        mem = await self._memory(owner)
        now = time.time()
        entry = mem.entries.get(key)
        if entry is None:
            entry = _Entry(key=key, size=size, created=now, updated=now)
            mem.entries[key] = entry
        if entry.resident:
            mem.resident_bytes -= entry.size
            self.total_resident -= entry.size
        entry.value, entry.size, entry.updated = value, size, now
        entry.vector = None
        entry.dirty = True
        entry.revision += 1
        self._make_resident(mem, entry)
        self._touch(mem, entry)
        item = self._item(owner, entry)  # before any await: a concurrent eviction may drop the value
        await self._enforce_limits(mem, protect=entry)
        return item

    async def get(self, agent: "AgentLike", key: str, *, owner: str | None = None) -> MemoryItem:
        owner = owner or agent.name
        await self.access.authorize(agent, "memory.read", owner, detail={"op": "get", "key": key})
        key = self._clean_key(key)
        mem = await self._memory(owner)
        entry = mem.entries.get(key)
        if entry is None:
            raise MemoryItemNotFoundError(f"agent {owner!r} has no memory item {key!r}", key=key)
        entry = await self._access(mem, entry)
        item = self._item(owner, entry)
        await self._enforce_limits(mem, protect=entry)
        return item

    async def search(self, agent: "AgentLike", query: str | None = None, *, k: int = 5, owner: str | None = None) -> list[MemoryItem]:
        """The ``k`` items most similar to ``query``, or the ``k`` most recently used when ``query`` is None."""
        owner = owner or agent.name
        await self.access.authorize(agent, "memory.read", owner, detail={"op": "search", "query": query})
        mem = await self._memory(owner)
        if not query:
            chosen = sorted(mem.entries.values(), key=lambda e: (e.history[-1] if e.history else 0, e.updated), reverse=True)[:k]
            scored: list[tuple[_Entry, float | None]] = [(e, None) for e in chosen]
        else:
            scored = list(await self._similar(mem, query, k))
        items = []
        for entry, score in scored:
            if mem.entries.get(entry.key) is not entry:
                continue  # deleted while we searched
            entry = await self._access(mem, entry)
            item = self._item(owner, entry)
            item.score = None if score is None else round(score, 6)
            items.append(item)
        await self._enforce_limits(mem)
        return items

    async def delete(self, agent: "AgentLike", key: str, *, owner: str | None = None) -> MemoryItem:
        owner = owner or agent.name
        await self.access.authorize(agent, "memory.write", owner, detail={"op": "delete", "key": key})
        key = self._clean_key(key)
        mem = await self._memory(owner)
        entry = mem.entries.get(key)
        if entry is None:
            raise MemoryItemNotFoundError(f"agent {owner!r} has no memory item {key!r}", key=key)
        return await self._forget(mem, entry)

    async def list(self, agent: "AgentLike", *, owner: str | None = None, limit: int | None = None) -> list[MemoryItem]:
        """Every item's metadata (no values), most recently used first."""
        owner = owner or agent.name
        await self.access.authorize(agent, "memory.read", owner, detail={"op": "list"})
        mem = await self._memory(owner)
        entries = sorted(mem.entries.values(), key=lambda e: (e.history[-1] if e.history else 0, e.updated), reverse=True)
        if limit is not None:
            entries = entries[:limit]
        return [self._item(owner, e, with_value=False) for e in entries]

    async def clear(self, agent: "AgentLike", *, owner: str | None = None) -> int:
        owner = owner or agent.name
        await self.access.authorize(agent, "memory.write", owner, detail={"op": "clear"})
        mem = await self._memory(owner)
        entries = list(mem.entries.values())
        for entry in entries:
            if mem.entries.get(entry.key) is entry:
                await self._forget(mem, entry)
        return len(entries)

    def usage(self) -> dict[str, Any]:
        return {
            "total_resident_bytes": self.total_resident,
            "agents": {o: {"items": len(m.entries), "resident_bytes": m.resident_bytes} for o, m in self._agents.items()},
            **self.stats.as_dict(),
        }

    async def aclose(self) -> None:
        """Write resident changes to storage so the next kernel finds them."""
        pending = [e.writing for m in self._agents.values() for e in m.entries.values() if e.writing is not None]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if not self.config.persist_on_close:
            return
        for mem in self._agents.values():
            for entry in list(mem.entries.values()):
                if entry.resident and entry.dirty:
                    try:
                        revision = entry.revision
                        await self._write_out(mem.owner, entry)
                        if entry.revision == revision:
                            entry.dirty = False
                    except AIOSError as exc:
                        log.error("memory %s/%s could not be saved at shutdown: %s", mem.owner, entry.key, exc.message)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _clean_key(key: str) -> str:
        try:
            return normalize_path(key)
        except SandboxPathError as exc:
            raise InvalidSyscallError(f"invalid memory key {key!r}: {exc.message}") from None

    def _item(self, owner: str, entry: _Entry, *, with_value: bool = True) -> MemoryItem:
        return MemoryItem(
            owner=owner,
            key=entry.key,
            value=entry.value if with_value and entry.value is not ABSENT else None,
            created=entry.created,
            updated=entry.updated,
            size=entry.size,
            resident=entry.resident,
        )

    async def _memory(self, owner: str) -> _AgentMemory:
        """The owner's memory, with the keys of items evicted in earlier runs indexed (once)."""
        mem = self._agents.get(owner)
        if mem is None:
            mem = self._agents[owner] = _AgentMemory(owner)
        if mem.loaded is None:
            mem.loaded = asyncio.get_running_loop().create_future()
            try:
                files = await self.storage.store.list(owner, MEMORY_PREFIX)
            except BaseException as exc:
                mem.loaded.set_exception(exc)
                mem.loaded.exception()  # mark retrieved; the next call retries
                mem.loaded = None
                raise
            for f in files:
                key = f.path[len(MEMORY_PREFIX) + 1 :]
                if key not in mem.entries:
                    mem.entries[key] = _Entry(key=key, size=f.size, created=f.created, updated=f.created)
            mem.loaded.set_result(None)
        elif not mem.loaded.done():
            await asyncio.shield(mem.loaded)
        return mem

    def _touch(self, mem: _AgentMemory, entry: _Entry) -> None:
        entry.history.append(next(self._clock))
        while len(entry.history) > self.config.k:
            entry.history.popleft()
        mem.heap.push(entry, entry.priority(self.config.k))

    def _make_resident(self, mem: _AgentMemory, entry: _Entry) -> None:
        if not entry.resident:
            entry.resident = True
            mem.resident_bytes += entry.size
            self.total_resident += entry.size

    async def _access(self, mem: _AgentMemory, entry: _Entry) -> _Entry:
        """Count an access; reload an evicted item (from its in-flight write, or from storage)."""
        if entry.resident:
            self.stats.hits += 1
        else:
            self.stats.misses += 1
            # the value may still be in RAM (its eviction write is in flight); otherwise read it back
            while entry.value is ABSENT:
                await self._reload(mem, entry)
                if mem.entries.get(entry.key) is not entry:
                    raise MemoryItemNotFoundError(f"memory item {entry.key!r} was deleted while it was being read")
            self._make_resident(mem, entry)  # no await since the value was seen: nothing can evict it in between
        self._touch(mem, entry)
        return entry

    async def _reload(self, mem: _AgentMemory, entry: _Entry) -> None:
        try:
            content = await self.storage.store.read(mem.owner, f"{MEMORY_PREFIX}/{entry.key}")
        except StorageError as exc:
            raise MemoryManagerError(f"memory item {entry.key!r} of {mem.owner!r} could not be reloaded: {exc.message}", reason="reload") from exc
        if entry.value is not ABSENT or mem.entries.get(entry.key) is not entry:
            return  # reloaded by someone else, or deleted, meanwhile
        record = json.loads(content.data)
        entry.value = record["value"]
        entry.created = record.get("created", entry.created)
        entry.updated = record.get("updated", entry.updated)
        entry.size = _size_of(entry.key, entry.value)
        entry.dirty = False
        entry.vector = None
        self.stats.reloads += 1

    def _pop_victim(self, mem: _AgentMemory, protect: _Entry | None) -> _Entry | None:
        return mem.heap.pop(skip=protect)

    def _global_victim(self, protect: _Entry | None) -> tuple[_AgentMemory, _Entry] | None:
        best: tuple[tuple[int, int], _AgentMemory] | None = None
        for mem in self._agents.values():
            if mem.resident_bytes == 0:
                continue
            prio = mem.heap.peek_key()
            if prio is not None and (best is None or prio < best[0]):
                best = (prio, mem)
        if best is None:
            return None
        victim = self._pop_victim(best[1], protect)
        return None if victim is None else (best[1], victim)

    async def _enforce_limits(self, mem: _AgentMemory, protect: _Entry | None = None) -> None:
        if time.monotonic() < self._hold_evictions_until:
            return
        writes: list[asyncio.Task[None]] = []
        while mem.resident_bytes > self.config.per_agent_limit:
            victim = self._pop_victim(mem, protect)
            if victim is None:
                break
            writes.append(self._evict(mem, victim))
        while self.total_resident > self.config.total_limit:
            found = self._global_victim(protect)
            if found is None:
                break
            writes.append(self._evict(*found))
        if writes:
            await asyncio.gather(*writes, return_exceptions=True)

    def _evict(self, mem: _AgentMemory, entry: _Entry) -> "asyncio.Task[None]":
        """Drop ``entry`` from the resident set now; its value stays readable until the storage write commits."""
        entry.resident = False
        mem.resident_bytes -= entry.size
        self.total_resident -= entry.size
        entry.vector = None
        self.stats.evictions += 1
        task = asyncio.ensure_future(self._finish_eviction(mem, entry, entry.revision))
        entry.writing = task
        return task

    async def _finish_eviction(self, mem: _AgentMemory, entry: _Entry, revision: int) -> None:
        try:
            if entry.dirty:
                await self._write_out(mem.owner, entry)
                if entry.revision == revision:
                    entry.dirty = False
        except AIOSError as exc:
            self.stats.eviction_failures += 1
            self._hold_evictions_until = time.monotonic() + self.config.eviction_retry
            log.warning("evicting memory %s/%s to storage failed (%s); it stays in RAM", mem.owner, entry.key, exc.message)
            if mem.entries.get(entry.key) is entry:
                self._make_resident(mem, entry)
                mem.heap.push(entry, entry.priority(self.config.k))
            return
        finally:
            entry.writing = None
        if not entry.resident and entry.revision == revision and not entry.dirty:
            entry.value = ABSENT  # on disk now; free the RAM

    async def _write_out(self, owner: str, entry: _Entry) -> None:
        record = {"key": entry.key, "value": entry.value, "created": entry.created, "updated": entry.updated}
        await self.storage.store.write(owner, f"{MEMORY_PREFIX}/{entry.key}", json.dumps(record, ensure_ascii=False), embed_text=_text_of(entry.value))

    async def _forget(self, mem: _AgentMemory, entry: _Entry) -> MemoryItem:
        if entry.writing is not None:
            await asyncio.gather(entry.writing, return_exceptions=True)
        if mem.entries.get(entry.key) is not entry:
            raise MemoryItemNotFoundError(f"memory item {entry.key!r} was already deleted")
        item = self._item(mem.owner, entry)
        del mem.entries[entry.key]
        mem.heap.remove(entry)
        if entry.resident:
            mem.resident_bytes -= entry.size
            self.total_resident -= entry.size
        try:
            await self.storage.store.delete(mem.owner, f"{MEMORY_PREFIX}/{entry.key}")
        except StorageError as exc:
            if exc.details.get("reason") not in ("not_found", "deleted"):
                raise
        return item

    async def _similar(self, mem: _AgentMemory, query: str, k: int) -> list[tuple[_Entry, float]]:
        if self.embedder is None:
            raise MemoryManagerError("similarity search needs an embedder; search without a query for the most recent items", reason="no_search")
        import numpy as np

        resident = [e for e in mem.entries.values() if e.value is not ABSENT]
        missing = [(e, e.revision) for e in resident if e.vector is None]
        texts = [_text_of(e.value) for e, _ in missing]
        vectors = await asyncio.to_thread(self.embedder.embed, [query, *texts])
        qvec = vectors[0]
        for (entry, revision), vec in zip(missing, vectors[1:]):
            if entry.revision == revision:  # not changed while the embedder ran (else that vector is of the old value)
                entry.vector = vec
        scored: dict[str, tuple[_Entry, float]] = {}
        if resident:
            matrix = np.stack([e.vector if e.vector is not None else np.zeros_like(qvec) for e in resident])
            for entry, score in zip(resident, matrix @ qvec):
                scored[entry.key] = (entry, float(score))
        if any(e.value is ABSENT for e in mem.entries.values()):
            hits = await self.storage.store.search(mem.owner, query, k=k, prefix=MEMORY_PREFIX)
            for hit in hits:
                key = hit.path[len(MEMORY_PREFIX) + 1 :]
                entry = mem.entries.get(key)
                if entry is not None and key not in scored:
                    scored[key] = (entry, hit.score)
        return sorted(scored.values(), key=lambda pair: pair[1], reverse=True)[:k]
