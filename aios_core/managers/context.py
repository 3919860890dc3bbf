"""The context manager: owns the snapshots of preempted generations.

Snapshots of KV state are large (a 512-token Gemma 270M sequence is a few
MiB), so they live under a memory budget: past it, the oldest are spilled to
files in the kernel's data directory and read back when their generation
resumes. An agent that ends (or a syscall that is cancelled) has its snapshots
dropped so nothing leaks.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from aios_core.cores.base import Snapshot
from aios_core.errors import CoreError

log = logging.getLogger(__name__)


@dataclass
class ContextStats:
    held: int = 0
    bytes_in_memory: int = 0
    bytes_on_disk: int = 0
    saved: int = 0
    restored: int = 0
    spilled: int = 0
    restore_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "snapshots_held": self.held,
            "bytes_in_memory": self.bytes_in_memory,
            "bytes_on_disk": self.bytes_on_disk,
            "saved": self.saved,
            "restored": self.restored,
            "spilled": self.spilled,
            "mean_restore_ms": round(1000 * self.restore_seconds / self.restored, 4) if self.restored else 0.0,
        }


class ContextManager:
    def __init__(self, *, memory_budget: int = 512 * 1024 * 1024, spill_dir: str | os.PathLike[str] | None = None) -> None:
        self.memory_budget = memory_budget
        self._spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._held: OrderedDict[str, tuple[str, Snapshot]] = OrderedDict()  # gen_id -> (agent, snapshot)
        self.stats = ContextStats()

    def _dir(self) -> Path:
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="aios-snapshots-"))
        self._spill_dir.mkdir(parents=True, exist_ok=True)
        return self._spill_dir

    def save(self, agent: str, snapshot: Snapshot) -> None:
        """Hold ``snapshot`` until its generation resumes; spill the oldest ones past the budget."""
        self.discard(snapshot.gen_id)
        self._held[snapshot.gen_id] = (agent, snapshot)
        self.stats.saved += 1
        self.stats.held = len(self._held)
        if snapshot.data is not None:
            self.stats.bytes_in_memory += len(snapshot.data)
        self._enforce_budget()

    def _enforce_budget(self) -> None:
        for gen_id, (_, snap) in list(self._held.items()):
            if self.stats.bytes_in_memory <= self.memory_budget:
                return
            if snap.data is None:
                continue
            try:
                path = self._dir() / f"{gen_id}.kv"
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(snap.data)
                os.replace(tmp, path)
            except OSError as exc:  # disk full, no spill directory: keep it in memory, over budget, rather than lose it
                log.warning("could not spill snapshot %s to %s: %s; keeping it in memory", gen_id, self._spill_dir, exc)
                return
            self.stats.bytes_in_memory -= len(snap.data)
            snap.nbytes = len(snap.data)
            self.stats.bytes_on_disk += snap.nbytes
            snap.data, snap.path = None, str(path)
            self.stats.spilled += 1

    def take(self, gen_id: str) -> Snapshot | None:
        """Remove and return the snapshot of ``gen_id`` with its data in memory (read back if spilled)."""
        entry = self._held.pop(gen_id, None)
        if entry is None:
            return None
        t0 = time.perf_counter()
        snap = entry[1]
        self.stats.held = len(self._held)
        if snap.path is not None:
            try:
                snap.data = Path(snap.path).read_bytes()
            except OSError as exc:
                raise CoreError(f"the spilled snapshot of {gen_id} could not be read back: {exc}") from exc
            finally:
                self.stats.bytes_on_disk -= snap.nbytes
                self._unlink(snap)
        elif snap.data is not None:
            self.stats.bytes_in_memory -= len(snap.data)
        self.stats.restored += 1
        self.stats.restore_seconds += time.perf_counter() - t0
        return snap

    def discard(self, gen_id: str) -> Snapshot | None:
        entry = self._held.pop(gen_id, None)
        if entry is None:
            return None
        snap = entry[1]
        if snap.data is not None:
            self.stats.bytes_in_memory -= len(snap.data)
        if snap.path is not None:
            self.stats.bytes_on_disk -= snap.nbytes
            self._unlink(snap)
        self.stats.held = len(self._held)
        return snap

    def drop_agent(self, agent: str) -> int:
        """Free every snapshot of ``agent`` (it ended); returns how many."""
        ids = [gid for gid, (owner, _) in self._held.items() if owner == agent]
        for gid in ids:
            self.discard(gid)
        return len(ids)

    @staticmethod
    def _unlink(snap: Snapshot) -> None:
        if snap.path is not None:
            try:
                os.unlink(snap.path)
            except OSError:
                pass
            snap.path = None

    def close(self) -> None:
        for gid in list(self._held):
            self.discard(gid)
