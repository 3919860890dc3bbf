"""The thin sync face over the async kernel: crossing from any thread or loop into the kernel's loop.

Sync frameworks (LangChain's ``invoke``, Open-Interpreter, MetaGPT's sync
helpers) block in :func:`run_sync`; async frameworks whose loop is not the
kernel's await :func:`run_async`; code already on the kernel loop awaits
directly. Streams cross with :func:`iterate_sync` / :func:`iterate_async`,
woken by the producer (no polling). Cancelling the caller cancels the work.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from aios_core.errors import KernelNotRunningError

T = TypeVar("T")
_DONE = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the caller runs on ``loop`` right now."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _submit(loop: asyncio.AbstractEventLoop | None, coro: Coroutine[Any, Any, T]) -> "asyncio.Future[T] | Any":
    if loop is None or loop.is_closed() or not loop.is_running():
        coro.close()
        raise KernelNotRunningError("the kernel is not running: start it first (kernel.start() or `async with kernel`)")
    return asyncio.run_coroutine_threadsafe(coro, loop)


def run_sync(loop: asyncio.AbstractEventLoop | None, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Block the calling thread until ``coro`` finished on ``loop``."""
    if loop is not None and on_loop(loop):
        coro.close()
        raise RuntimeError("a blocking kernel call was made on the kernel's own loop; await the async API (a-prefixed methods) there")
    future = _submit(loop, coro)
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise


async def run_async(loop: asyncio.AbstractEventLoop | None, coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on ``loop`` from whatever loop the caller is on."""
    if loop is not None and on_loop(loop):
        return await coro
    return await asyncio.wrap_future(_submit(loop, coro))


def iterate_sync(loop: asyncio.AbstractEventLoop | None, agen: AsyncIterator[T]) -> Iterator[T]:
    """A blocking iterator over an async iterator that runs on ``loop``."""
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()

    async def pump() -> None:
        try:
            async for item in agen:
                q.put(item)
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer
            q.put(_Failure(exc))
        finally:
            q.put(_DONE)

    future = _submit(loop, pump())
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        future.cancel()


async def iterate_async(loop: asyncio.AbstractEventLoop | None, agen: AsyncIterator[T]) -> AsyncIterator[T]:
    """An async iterator on the caller's loop over one that runs on ``loop``."""
    if loop is not None and on_loop(loop):
        async for item in agen:
            yield item
        return
    caller = asyncio.get_running_loop()
    q: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in agen:
                caller.call_soon_threadsafe(q.put_nowait, item)
        except BaseException as exc:  # noqa: BLE001
            caller.call_soon_threadsafe(q.put_nowait, _Failure(exc))
        finally:
            caller.call_soon_threadsafe(q.put_nowait, _DONE)

    future = _submit(loop, pump())
    try:
        while True:
            item = await q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        future.cancel()


class LoopThread:
    """An asyncio loop running forever in a daemon thread: the home of an embedded kernel."""

    def __init__(self, name: str = "aios-kernel") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
