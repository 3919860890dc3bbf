"""The built-in memory and storage managers, registered as backends like a third party's would be.

``[managers.storage] backend = "sqlite"`` and ``[managers.memory] backend =
"lru-k"`` are the defaults; a plugin registering another name through the same
hooks replaces either (see ``aios_register_storage_backends``).
"""

from __future__ import annotations

from typing import Any

from aios_core.components import BackendContext, BackendFactory
from aios_core.hookspecs import hookimpl


def sqlite_storage(config: Any, context: BackendContext) -> Any:
    from aios_core.managers.storage import StorageManager

    return StorageManager(config, data_dir=context.data_dir, access=context.access, embedder=context.embedder)


def lru_k_memory(config: Any, context: BackendContext) -> Any:
    from aios_core.managers.memory import MemoryManager

    return MemoryManager(config, storage=context.storage, access=context.access, embedder=context.embedder)


SQLITE = BackendFactory("sqlite", sqlite_storage, "SQLite (WAL): every version kept, rollback, diff, faiss vector search; per-agent paths")
LRU_K = BackendFactory("lru-k", lru_k_memory, "per-agent memory in RAM under size limits, LRU-K eviction into storage, similarity search")


@hookimpl
def aios_register_storage_backends() -> list[BackendFactory]:
    return [SQLITE]


@hookimpl
def aios_register_memory_backends() -> list[BackendFactory]:
    return [LRU_K]
