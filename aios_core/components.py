"""The kinds of things plugins contribute, besides schedulers (classes) and tools (:mod:`aios_core.tool`).

Each has a ``name`` under which configuration refers to it; the plugin host
refuses a second registration of a name and reports the plugin that tried.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
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
    """Builds a memory or storage backend from its configuration table (keyword options)."""

    name: str
    create: Callable[..., Any]
    description: str = ""


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
