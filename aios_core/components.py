"""The kinds of things plugins contribute, besides schedulers (classes) and tools (:mod:`aios_core.tool`).

Each has a ``name`` under which configuration refers to it; the plugin host
refuses a second registration of a name and reports the plugin that tried.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aios_core.cores.base import LLMCore


@dataclass(frozen=True)
class CoreFactory:
    """Builds an LLM core of one kind from its configuration table (keyword options)."""

    name: str
    create: Callable[..., "LLMCore"]
    description: str = ""


@dataclass(frozen=True)
class BackendFactory:
    """Builds the memory or the storage manager the configuration selects (``managers.<kind>.backend``).

    ``create(config, context)`` gets the validated ``[managers.memory]`` /
    ``[managers.storage]`` table (its ``options`` table holds the backend's own
    settings) and a :class:`BackendContext`, and returns the manager: an object
    with the built-in manager's methods (``handle(syscall, agent)``,
    ``aclose()``, and what the other managers call on it); subclassing the
    built-in :class:`~aios_core.managers.memory.MemoryManager` /
    :class:`~aios_core.managers.storage.StorageManager` is the easy way.
    """

    name: str
    create: Callable[..., Any]
    description: str = ""


@dataclass(frozen=True)
class BackendContext:
    """What a manager backend is built with: where data lives and the managers it works with."""

    data_dir: Path
    #: the access manager every agent-facing operation must ask (and that audits)
    access: Any
    #: the embedder for similarity search (``embed(texts) -> list[vector]``)
    embedder: Any
    #: the storage manager (given to memory backends, which evict into it; None for storage backends)
    storage: Any = None


class Adapter(abc.ABC):
    """Routes one agent framework's LLM and tool calls through the kernel by patching it in place.

    ``patch`` must be idempotent and ``unpatch`` must restore the framework's
    original objects exactly. ``supported`` is a PEP 440 specifier of the
    framework versions the adapter was written for; patching another version
    fails with a message naming the range.
    """

    #: the name users pass to ``aios.patch``
    name: str = ""
    #: distribution whose version is checked, and the range supported
    distribution: str = ""
    supported: str = ""
    description: str = ""

    @abc.abstractmethod
    def patch(self, kernel: Any, **agent_options: Any) -> None: ...

    @abc.abstractmethod
    def unpatch(self) -> None: ...

    @property
    @abc.abstractmethod
    def patched(self) -> bool: ...
