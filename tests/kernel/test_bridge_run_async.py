"""bridge.run_async: the one way to await work on another loop (the kernel's, or a framework's with its context).

Mutations caught: the context dropped (a framework tool would run as the wrong agent) -> test_*_context_*;
a caller's cancel not reaching the task on the other loop (a timed-out tool keeps running) ->
test_cancelling_the_caller_*; a stopped loop accepted (the caller would wait forever) -> test_a_stopped_loop_*.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from aios_core import bridge
from aios_core.errors import KernelNotRunningError

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


@pytest.fixture
def other_loop():
    thread = bridge.LoopThread(name="test-other-loop")
    yield thread.loop
    thread.stop()


async def test_a_coroutine_runs_on_the_other_loop(other_loop):
    async def where() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    assert await bridge.run_async(other_loop, where()) is other_loop


async def test_a_factory_runs_on_the_other_loop_inside_the_given_context(other_loop):
    seen: list[tuple[str, bool]] = []

    async def tool() -> str:
        seen.append((who.get(), asyncio.get_running_loop() is other_loop))
        who.set("changed inside")  # stays inside the copy
        return "ok"

    who.set("alice")
    context = contextvars.copy_context()
    who.set("bob")
    assert await bridge.run_async(other_loop, tool, context=context) == "ok"
    assert seen == [("alice", True)]
    assert who.get() == "bob" and context[who] == "changed inside"


async def test_on_its_own_loop_the_context_is_still_used():
    async def tool() -> str:
        return who.get()

    who.set("carol")
    context = contextvars.copy_context()
    who.set("dave")
    assert await bridge.run_async(asyncio.get_running_loop(), tool, context=context) == "carol"


async def test_errors_come_back_to_the_caller(other_loop):
    async def broken() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await bridge.run_async(other_loop, broken, context=contextvars.copy_context())


@pytest.mark.parametrize("with_context", [False, True])
async def test_cancelling_the_caller_cancels_the_task_on_the_other_loop(other_loop, with_context):
    started, cancelled = threading.Event(), threading.Event()

    async def long_tool() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    context = contextvars.copy_context() if with_context else None
    caller = asyncio.ensure_future(bridge.run_async(other_loop, long_tool, context=context))
    assert await asyncio.to_thread(started.wait, 30)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await asyncio.to_thread(cancelled.wait, 30)


async def test_a_stopped_loop_is_refused_at_once():
    thread = bridge.LoopThread(name="test-stopped-loop")
    loop = thread.loop
    thread.stop()
    made: list[str] = []

    async def tool() -> None:
        made.append("ran")

    with pytest.raises(KernelNotRunningError):
        await bridge.run_async(loop, tool, context=contextvars.copy_context())
    with pytest.raises(KernelNotRunningError):
        await bridge.run_async(loop, tool())
    assert made == []
