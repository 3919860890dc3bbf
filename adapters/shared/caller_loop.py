"""Running a framework's coroutine on the framework's own loop, from the kernel's loop.

A framework tool routed through the tool manager is *admitted* on the kernel's
loop (validation, access control, concurrency limit, timeout) but must *run*
where the framework runs: its coroutines may use locks, queues or clients
bound to the framework's loop, and its context variables (agent identity,
tracing spans, LangChain's run config). :func:`run_on_loop` starts the
coroutine as a task on that loop in a copy of the caller's context, and
cancels it if the kernel gives up on it (a tool timeout).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aios_core import bridge

T = TypeVar("T")


async def run_on_loop(
    loop: asyncio.AbstractEventLoop, context: contextvars.Context, factory: Callable[[], Awaitable[T]]
) -> T:
    """Await ``factory()`` run as a task on ``loop`` inside ``context``, from whatever loop calls this."""
    if bridge.on_loop(loop):
        return await loop.create_task(_as_coroutine(factory), context=context)

    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
    state: dict[str, Any] = {"task": None, "abandoned": False}

    def start() -> None:
        if state["abandoned"]:
            return
        task = loop.create_task(_as_coroutine(factory), context=context)
        state["task"] = task
        task.add_done_callback(lambda t: _copy_outcome(t, outcome))

    def abandon() -> None:
        state["abandoned"] = True
        if state["task"] is not None:
            state["task"].cancel()

    loop.call_soon_threadsafe(start)
    try:
        return await asyncio.wrap_future(outcome)
    except asyncio.CancelledError:
        if not loop.is_closed():
            loop.call_soon_threadsafe(abandon)
        raise


async def _as_coroutine(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


def _copy_outcome(task: asyncio.Task[T], outcome: concurrent.futures.Future[T]) -> None:
    if outcome.done():
        return
    if task.cancelled():
        outcome.cancel()
    elif task.exception() is not None:
        outcome.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        outcome.set_result(task.result())
