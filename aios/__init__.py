"""AIOS for Python: an LLM agent operating system for the agent frameworks you already use.

    import aios
    aios.patch("autogen")        # every AutoGen LLM and tool call is now a scheduled syscall

    with aios.Kernel() as kernel:  # or use the SDK directly
        print(kernel.agent("alice").chat("Hello!").content)
"""

from aios_core import __version__
from aios_core.agents import AgentRecord
from aios_core.clock import VirtualTimeLoop, run_virtual
from aios_core.components import Adapter, BackendFactory, CoreFactory
from aios_core.config import KernelConfig, load_config
from aios_core.cores.base import Chunk, Generation, LLMCore, Snapshot
from aios_core.errors import (
    AccessDeniedError,
    AIOSError,
    ConfigError,
    ContextLengthError,
    CoreError,
    InvalidSyscallError,
    KernelNotRunningError,
    QueueFullError,
    StorageError,
    SyscallCancelledError,
    SyscallTimeoutError,
    ToolError,
    UnknownAgentError,
    UnknownComponentError,
)
from aios_core.hookspecs import hookimpl
from aios_core.identity import AgentIdentity, agent_scope, current_agent
from aios_core.kernel import Kernel
from aios_core.patching import default_kernel, patch, patched, set_default_kernel, unpatch
from aios_core.scheduler.base import Job, Scheduler
from aios_core.sdk import Agent
from aios_core.syscalls import (
    LLMRequest,
    LLMResponse,
    LLMSyscall,
    MemorySyscall,
    Message,
    StorageSyscall,
    StreamPiece,
    ToolCall,
    ToolSpec,
    ToolSyscall,
    parse_syscall,
)
from aios_core.tool import Tool


def connect(url: str | None = None, token: str | None = None) -> "object":
    """A remote kernel (``aios serve``) with the same API as an embedded one; defaults from AIOS_URL / AIOS_TOKEN."""
    from aios_core.server.remote import connect as _connect

    return _connect(url, token)


__all__ = [
    "AgentIdentity",
    "agent_scope",
    "connect",
    "current_agent",
    "default_kernel",
    "patch",
    "patched",
    "set_default_kernel",
    "unpatch",
    "AIOSError",
    "AccessDeniedError",
    "Adapter",
    "Agent",
    "AgentRecord",
    "BackendFactory",
    "Chunk",
    "ConfigError",
    "ContextLengthError",
    "CoreError",
    "CoreFactory",
    "Generation",
    "InvalidSyscallError",
    "Job",
    "Kernel",
    "KernelConfig",
    "KernelNotRunningError",
    "LLMCore",
    "LLMRequest",
    "LLMResponse",
    "LLMSyscall",
    "MemorySyscall",
    "Message",
    "QueueFullError",
    "Scheduler",
    "Snapshot",
    "StorageError",
    "StorageSyscall",
    "StreamPiece",
    "SyscallCancelledError",
    "SyscallTimeoutError",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolSpec",
    "ToolSyscall",
    "UnknownAgentError",
    "UnknownComponentError",
    "VirtualTimeLoop",
    "__version__",
    "hookimpl",
    "load_config",
    "parse_syscall",
    "run_virtual",
]
