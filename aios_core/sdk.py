"""The agent SDK: an agent's view of the kernel, the same whether the kernel is embedded or remote.

``Agent`` only builds syscalls and hands them to a *transport* with four
methods (``acall``, ``call``, ``astream``, ``stream``): an embedded
:class:`~aios_core.kernel.Kernel` is one, the HTTP client of a remote kernel is
another. Every method has an async form (``a`` prefix) and a sync form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Protocol

from aios_core.syscalls import (
    LLMRequest,
    LLMResponse,
    LLMSyscall,
    MemorySyscall,
    Message,
    StorageSyscall,
    StreamPiece,
    ToolCall,
    ToolSyscall,
    validate_model,
)


class Transport(Protocol):
    async def acall(self, syscall: Any) -> Any: ...
    def call(self, syscall: Any) -> Any: ...
    def astream(self, syscall: Any) -> AsyncIterator[StreamPiece]: ...
    def stream(self, syscall: Any) -> Iterator[StreamPiece]: ...


MessagesLike = str | Sequence[Message | dict[str, Any]]


def _messages(messages: MessagesLike, system: str | None) -> list[Any]:
    items: list[Any] = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    if system is not None:
        items.insert(0, {"role": "system", "content": system})
    return items


class Agent:
    """A registered agent. Obtain one with ``kernel.agent("name")`` or ``aios.connect(url).agent("name")``."""

    def __init__(self, transport: Transport, name: str, *, program: str | None = None, priority: int = 0) -> None:
        self.transport = transport
        self.name = name
        self.program = program or name
        self.priority = priority

    # ------------------------------------------------------------------ building syscalls

    def llm_syscall(
        self,
        messages: MessagesLike,
        *,
        system: str | None = None,
        timeout: float | None = None,
        hint_tokens: int | None = None,
        **request: Any,
    ) -> LLMSyscall:
        req = validate_model(LLMRequest, {"messages": _messages(messages, system), **request}, "LLM request")
        return LLMSyscall(
            agent=self.name, program=self.program, priority=self.priority, request=req, timeout=timeout, hint_tokens=hint_tokens
        )

    def _common(self, timeout: float | None) -> dict[str, Any]:
        return {"agent": self.name, "program": self.program, "priority": self.priority, "timeout": timeout}

    # ------------------------------------------------------------------ LLM

    async def achat(self, messages: MessagesLike, **options: Any) -> LLMResponse:
        """Ask the model; ``options`` are LLMRequest fields (tools, max_tokens, temperature, response_format, model, ...)."""
        return await self.transport.acall(self.llm_syscall(messages, **options))  # type: ignore[no-any-return]

    def chat(self, messages: MessagesLike, **options: Any) -> LLMResponse:
        return self.transport.call(self.llm_syscall(messages, **options))  # type: ignore[no-any-return]

    async def astream(self, messages: MessagesLike, **options: Any) -> AsyncIterator[StreamPiece]:
        async for piece in self.transport.astream(self.llm_syscall(messages, **options)):
            yield piece

    def stream(self, messages: MessagesLike, **options: Any) -> Iterator[StreamPiece]:
        return self.transport.stream(self.llm_syscall(messages, **options))

    # ------------------------------------------------------------------ tools

    def tool_syscall(self, calls: Sequence[ToolCall | dict[str, Any]], *, timeout: float | None = None) -> ToolSyscall:
        return validate_model(ToolSyscall, {**self._common(timeout), "calls": list(calls)}, "tool syscall")  # type: ignore[no-any-return]

    async def acall_tools(self, calls: Sequence[ToolCall | dict[str, Any]], *, timeout: float | None = None) -> Any:
        """Run independent tool calls (in parallel, validated, access-checked); one result per call."""
        return await self.transport.acall(self.tool_syscall(calls, timeout=timeout))

    def call_tools(self, calls: Sequence[ToolCall | dict[str, Any]], *, timeout: float | None = None) -> Any:
        return self.transport.call(self.tool_syscall(calls, timeout=timeout))

    # ------------------------------------------------------------------ memory and storage

    def memory_syscall(self, op: str, *, timeout: float | None = None, **fields: Any) -> MemorySyscall:
        return validate_model(MemorySyscall, {**self._common(timeout), "op": op, **fields}, "memory syscall")  # type: ignore[no-any-return]

    async def amemory(self, op: str, **fields: Any) -> Any:
        """Memory operation: add(key, value) / get(key) / search(query, k) / delete(key) / list() / clear()."""
        return await self.transport.acall(self.memory_syscall(op, **fields))

    def memory(self, op: str, **fields: Any) -> Any:
        return self.transport.call(self.memory_syscall(op, **fields))

    def storage_syscall(self, op: str, *, timeout: float | None = None, **fields: Any) -> StorageSyscall:
        return validate_model(StorageSyscall, {**self._common(timeout), "op": op, **fields}, "storage syscall")  # type: ignore[no-any-return]

    async def astorage(self, op: str, **fields: Any) -> Any:
        """Storage operation: write/read/list/delete/versions/rollback/diff/search on this agent's sandbox."""
        return await self.transport.acall(self.storage_syscall(op, **fields))

    def storage(self, op: str, **fields: Any) -> Any:
        return self.transport.call(self.storage_syscall(op, **fields))
