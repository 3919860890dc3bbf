"""The port between framework adapters and a kernel: everything an adapter may ask, and nothing more.

Adapters run in the caller's process and talk either to a :class:`~aios_core.kernel.Kernel`
embedded there or to a :class:`~aios_core.server.remote.RemoteKernel` behind ``aios serve``.
Both implement :class:`KernelPort` (``tests/adapters/test_port.py`` has a type checker verify
it), so an adapter is written once against this
protocol and never reaches into kernel internals (pools, cores, managers, the agent table).
``tests/adapters/test_port.py`` fails when an adapter touches a kernel attribute outside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from aios_core.agents import AgentRecord
    from aios_core.syscalls import AnySyscall, LLMSyscall, StreamPiece
    from aios_core.tool import Tool


@runtime_checkable
class ToolRegistry(Protocol):
    """The part of the kernel's tool manager an adapter uses to run framework tools under it."""

    def get(self, name: str) -> Tool | None: ...

    def register(self, tool: Tool) -> None: ...


@runtime_checkable
class KernelPort(Protocol):
    """What an adapter may ask of a kernel, embedded or remote."""

    #: True when framework tools cannot be registered as kernel functions (the kernel is in another process):
    #: they are then declared with each call (``ClientTool``) and run by the adapter once the kernel grants them
    hosts_client_tools: bool

    def call(self, syscall: AnySyscall) -> Any:
        """Run one syscall to completion (blocking)."""
        ...

    async def acall(self, syscall: AnySyscall) -> Any:
        """Run one syscall to completion."""
        ...

    def stream(self, syscall: LLMSyscall) -> Iterator[StreamPiece]:
        """An LLM syscall's pieces as they are generated (blocking iterator)."""
        ...

    def astream(self, syscall: LLMSyscall) -> AsyncIterator[StreamPiece]:
        """An LLM syscall's pieces as they are generated."""
        ...

    def register_agent(
        self, name: str, *, group: str | None = None, program: str | None = None, priority: int = 0, framework: str = "sdk"
    ) -> AgentRecord:
        """Make ``name`` known to the kernel (idempotent: registering a known agent returns its record)."""
        ...

    def has_agent(self, name: str) -> bool:
        """Whether ``name`` is registered (adapters register each agent once, on its first call)."""
        ...

    def served_models(self) -> list[str]:
        """The model (and core) names this kernel answers for, in configuration order."""
        ...

    def tool_registry(self) -> ToolRegistry | None:
        """The kernel's tool manager when it can run this process's functions (embedded), else None."""
        ...
