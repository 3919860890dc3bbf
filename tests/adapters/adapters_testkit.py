"""Test helpers for framework adapters: a kernel that records what it served, and a fast sim core."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.syscalls import LLMSyscall, ToolSyscall


class RecordingKernel(Kernel):
    """A real kernel that also keeps every syscall it was given and what it answered.

    Lets a test compare what a framework received with what the kernel sent,
    and see which agent and program each call was scheduled under.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served: list[tuple[Any, Any]] = []
        self._served_lock = threading.Lock()

    def _record(self, syscall: Any, result: Any) -> None:
        with self._served_lock:
            self.served.append((syscall, result))

    def call(self, syscall: Any) -> Any:
        result = super().call(syscall)
        self._record(syscall, result)
        return result

    async def acall(self, syscall: Any) -> Any:
        result = await super().acall(syscall)
        self._record(syscall, result)
        return result

    def stream(self, syscall: Any) -> Iterator[Any]:
        for piece in super().stream(syscall):
            if piece.response is not None:
                self._record(syscall, piece.response)
            yield piece

    async def astream(self, syscall: Any) -> AsyncIterator[Any]:
        async for piece in super().astream(syscall):
            if piece.response is not None:
                self._record(syscall, piece.response)
            yield piece

    def llm_calls(self) -> list[tuple[LLMSyscall, Any]]:
        return [(s, r) for s, r in self.served if isinstance(s, LLMSyscall)]

    def tool_calls(self) -> list[tuple[ToolSyscall, Any]]:
        return [(s, r) for s, r in self.served if isinstance(s, ToolSyscall)]


def fast_sim_core(**options: Any) -> SimCore:
    return SimCore(**{"t0": 0.0005, "a": 0.0, "b": 0.0, **options})
