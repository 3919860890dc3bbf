"""An asyncio event loop on virtual time, for simulations that must run fast and repeat exactly.

The loop's clock (``loop.time()``) only moves when every task is waiting on a
timer: then it jumps straight to the earliest one instead of sleeping. Code
written for a real loop (``asyncio.sleep``, ``asyncio.timeout``, the kernel's
timing records) runs unchanged, so the sim core and the whole kernel can
simulate hours of agent traffic in seconds, deterministically.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """Never blocks: a wait of ``timeout`` seconds advances the owning loop's virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or self.loop is None:
            return events
        if timeout is None:
            # nothing scheduled at all; only I/O could wake us (e.g. call_soon_threadsafe), so really wait
            return super().select(None)
        if timeout > 0:
            self.loop.advance(timeout)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh :class:`VirtualTimeLoop` (like ``asyncio.run``)."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
