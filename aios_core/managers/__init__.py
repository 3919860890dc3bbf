"""The kernel's managers: context (snapshots), memory, storage, tools and access.

Modules, one concept each:

- ``context``: snapshots of preempted generations (the lead's);
- ``factory``: :func:`build_managers` and :class:`ManagersConfig`, the one call the kernel makes;
- ``memory``: per-agent short-term memory, LRU-K eviction into storage, retrieval;
- ``storage``: versioned files on SQLite with rollback, diff and vector search;
- ``sqlite_pool``: SQLite off the event loop (one writer thread, reader threads);
- ``embeddings``: the packaged MiniLM model or hashed n-grams; ``vector_index``: faiss per owner;
- ``sandbox_paths``: per-agent path normalisation and symlink-escape checks;
- ``tools``: the tool registry and parallel, validated, limited execution; ``builtin_tools``: the built-in set;
- ``sandbox`` / ``sandbox_child``: subprocess execution with time and memory limits;
- ``access``: privilege groups and confirmation of irreversible actions; ``audit``: the append-only log.

Heavy modules are imported on first use of :func:`build_managers`, so importing
this package (e.g. for the context manager) stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_managers", "Managers", "ManagersConfig", "audit_file", "managers_config", "read_audit"]


def __getattr__(name: str) -> Any:
    if name in ("build_managers", "Managers", "ManagersConfig", "managers_config", "audit_file", "managers_for_kernel"):
        from aios_core.managers import factory

        return getattr(factory, name)
    if name == "read_audit":
        from aios_core.managers.audit import read_audit

        return read_audit
    raise AttributeError(f"module 'aios_core.managers' has no attribute {name!r}")
