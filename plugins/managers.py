"""The built-in memory and storage managers, registered as backends like a third party's would be.

``[managers.storage] backend = "sqlite"`` and ``[managers.memory] backend =
"lru-k"`` are the defaults; a plugin registering another name through the same
hooks replaces either (see ``aios_register_storage_backends``).
"""

from __future__ import annotations

from aios_core.components import BackendFactory
from aios_core.hookspecs import hookimpl
from aios_core.managers.backends import LRU_K, SQLITE


@hookimpl
def aios_register_storage_backends() -> list[BackendFactory]:
    return [SQLITE]


@hookimpl
def aios_register_memory_backends() -> list[BackendFactory]:
    return [LRU_K]
