"""The built-in memory and storage backends: what ``[managers.<kind>] backend`` names by default.

They are registered through the same hooks a third party uses (by the built-in
plugin ``aios.plugins.managers``); they live here, beside the managers they
build, so that the managers can fall back on them without importing a plugin.
"""

from __future__ import annotations

from typing import Any

from aios_core.components import BackendContext, BackendFactory


def sqlite_storage(config: Any, context: BackendContext) -> Any:
    from aios_core.managers.storage import StorageManager

    return StorageManager(config, data_dir=context.data_dir, access=context.access, embedder=context.embedder)


def lru_k_memory(config: Any, context: BackendContext) -> Any:
    from aios_core.managers.memory import MemoryManager

    return MemoryManager(config, storage=context.storage, access=context.access, embedder=context.embedder)


SQLITE = BackendFactory("sqlite", sqlite_storage, "SQLite (WAL): every version kept, rollback, diff, faiss vector search; per-agent paths")
LRU_K = BackendFactory("lru-k", lru_k_memory, "per-agent memory in RAM under size limits, LRU-K eviction into storage, similarity search")
