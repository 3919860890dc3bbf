"""One call that builds the memory, storage, tool and access managers the kernel plugs in.

The kernel's config carries the managers' options as plain tables
(``[managers.memory]``, ``[managers.storage]``, ``[managers.tools]``,
``[managers.access]``, ``[managers.embeddings]``); :class:`ManagersConfig`
validates them, so a typo fails at start with the offending key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aios_core.components import BackendContext
from aios_core.errors import ConfigError
from aios_core.managers.access import AccessConfig, AccessManager, ConfirmFn, chain_confirmations
from aios_core.managers.audit import AuditLog
from aios_core.managers.embeddings import Embedder, EmbeddingConfig, make_embedder
from aios_core.managers.memory import MemoryConfig, MemoryManager
from aios_core.managers.storage import StorageConfig, StorageManager
from aios_core.managers.tools import ToolConfig, ToolManager
from aios_core.tool import Tool

log = logging.getLogger(__name__)


class ManagersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tools: ToolConfig = Field(default_factory=ToolConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    embeddings: EmbeddingConfig = Field(default_factory=EmbeddingConfig)


@dataclass
class Managers:
    """What the kernel dispatches managed syscalls to: ``getattr(managers, syscall.kind)`` for memory/storage/tool."""

    memory: MemoryManager
    storage: StorageManager
    tools: ToolManager
    access: AccessManager
    audit: AuditLog
    embedder: Embedder

    @property
    def tool(self) -> ToolManager:
        """Alias matching ``ToolSyscall.kind == "tool"``."""
        return self.tools

    def stats(self) -> dict[str, Any]:
        return {
            "memory": self.memory.usage(),
            "storage": dict(self.storage.stats),
            "tools": dict(self.tools.stats),
            "access": dict(self.access.decisions),
            "embedder": self.embedder.name,
        }

    async def aclose(self) -> None:
        """Persist memory, stop tool threads, close the database and the audit log (in that order)."""
        try:
            await self.memory.aclose()
        finally:
            await self.tools.aclose()
            await self.storage.aclose()
            self.audit.close()


def audit_file(config: ManagersConfig, data_dir: str | Path) -> Path:
    """Where the audit log is: ``managers.access.audit_file``, relative to the data directory unless absolute."""
    path = Path(config.access.audit_file)
    return path if path.is_absolute() else Path(data_dir) / path


def managers_config(config: ManagersConfig | Mapping[str, Any] | None) -> ManagersConfig:
    """The validated ``[managers]`` tables (defaults filled in); a ConfigError names each offending key."""
    if isinstance(config, ManagersConfig):
        return config
    try:
        return ManagersConfig.model_validate(dict(config or {}))
    except ValidationError as exc:
        lines = [f"managers.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise ConfigError("invalid manager configuration: " + "; ".join(lines), errors=lines) from None


def build_managers(
    config: ManagersConfig | Mapping[str, Any] | Any | None = None,
    *,
    data_dir: str | Path | None = None,
    plugin_tools: Mapping[str, Tool] | None = None,
    confirm: ConfirmFn | None = None,
    embedder: Embedder | None = None,
    backends: Mapping[str, Mapping[str, Any]] | None = None,
) -> Managers:
    """Build all managers. Cheap and non-blocking: the database opens on first use, off the loop.

    ``backends`` maps "memory" / "storage" to the registered :class:`~aios_core.components.BackendFactory`
    objects by name (the plugin host's ``memory_backends`` / ``storage_backends``); the configuration's
    ``backend`` key picks one. Without ``backends`` only the built-in ones are known.

    ``build_managers(kernel)`` is accepted too: it reads ``kernel.config.managers``,
    ``kernel.config.data_dir``, the plugin host's tools, and chains ``kernel.confirm``
    with the ``aios_confirm_action`` hook.
    """
    if hasattr(config, "plugins") and hasattr(config, "config"):
        return managers_for_kernel(config)
    if data_dir is None:
        raise ConfigError("build_managers needs data_dir (where storage, memory and the audit log live)")
    cfg = managers_config(config)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    audit = AuditLog(audit_file(cfg, data_dir))
    access = AccessManager(cfg.access, audit, confirm=confirm)
    embedder = embedder or make_embedder(cfg.embeddings)
    try:
        storage = _create("storage", cfg.storage, backends, BackendContext(data_dir, access, embedder))
        memory = _create("memory", cfg.memory, backends, BackendContext(data_dir, access, embedder, storage=storage))
    except BaseException:
        audit.close()
        raise
    tools = ToolManager(cfg.tools, tools=dict(plugin_tools or {}), access=access, storage=storage, data_dir=data_dir)
    return Managers(memory=memory, storage=storage, tools=tools, access=access, audit=audit, embedder=embedder)


def _builtin_backends() -> dict[str, dict[str, Any]]:
    from aios_core.managers.backends import LRU_K, SQLITE

    return {"storage": {SQLITE.name: SQLITE}, "memory": {LRU_K.name: LRU_K}}


def _create(kind: str, config: Any, backends: Mapping[str, Mapping[str, Any]] | None, context: BackendContext) -> Any:
    """The ``kind`` manager of the configured backend, or a ConfigError naming the key and the choices."""
    known = dict((backends or _builtin_backends()).get(kind, {}))
    factory = known.get(config.backend)
    if factory is None:
        raise ConfigError(
            f"managers.{kind}.backend: no {kind} backend named {config.backend!r}; registered: {', '.join(sorted(known)) or 'none'} "
            "(a plugin adds one through aios_register_" + kind + "_backends; `aios plugins` lists them)",
            key=f"managers.{kind}.backend",
        )
    try:
        manager = factory.create(config, context)
    except ConfigError:
        raise
    except Exception as exc:  # a plugin's factory: name it, do not start on another backend than the one asked for
        raise ConfigError(f"managers.{kind}.backend: the {kind} backend {config.backend!r} failed to start: {exc!r}", key=f"managers.{kind}.backend") from exc
    missing = [m for m in ("handle", "aclose") if not callable(getattr(manager, m, None))]
    if missing:
        raise ConfigError(f"managers.{kind}.backend: the {kind} backend {config.backend!r} returned {type(manager).__name__}, which lacks {', '.join(missing)}")
    return manager


def managers_for_kernel(kernel: Any) -> Managers:
    """The managers of a :class:`~aios_core.kernel.Kernel`, from its config and plugins."""
    plugins = kernel.plugins

    def plugin_hook(agent: str, action: str, detail: dict[str, Any]) -> bool | None:
        return plugins.first_answer("aios_confirm_action", agent=agent, action=action, detail=detail)

    return build_managers(
        kernel.config.managers,
        data_dir=kernel.config.data_dir,
        plugin_tools=plugins.all("tools"),
        confirm=chain_confirmations(getattr(kernel, "confirm", None), plugin_hook),
        backends={"memory": plugins.all("memory_backends"), "storage": plugins.all("storage_backends")},
    )
