"""What a tool is: a name, a JSON schema for its arguments, a callable, and its side-effect class.

The side-effect class is what access control acts on: ``irreversible`` tools
(delete, overwrite without a version, shell, network, code execution) need a
confirmation before they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

SideEffect = Literal["none", "read", "write", "irreversible"]


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    func: Callable[..., Any]
    side_effect: SideEffect = "none"
    #: seconds a call may take before it is abandoned with a ToolError
    timeout: float = 30.0
    #: calls of this tool that may run at once across all agents
    max_concurrency: int = 4
    #: run in a subprocess with time and memory limits (code execution, untrusted callables)
    sandboxed: bool = False
    #: memory limit in MiB for sandboxed tools
    memory_mb: int = 512
    #: off unless the configuration enables it (shell, web fetch)
    enabled_by_default: bool = True
    #: the callable receives the calling agent's context as ``_ctx`` (storage tools need it)
    wants_context: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)

    def spec(self) -> dict[str, Any]:
        """The OpenAI-style function spec offered to models."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}
