"""The thin sync face over the async kernel: crossing from any thread or loop into the kernel's loop.

Sync frameworks (LangChain's ``invoke``, Open-Interpreter, MetaGPT's sync
helpers) block in :func:`run_sync`; async frameworks whose loop is not the
kernel's await :func:`run_async`; code already on the kernel loop awaits
directly. Streams cross with :func:`iterate_sync` / :func:`iterate_async`,
woken by the producer (no polling). Cancelling the caller cancels the work.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import logging
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from aios_core.errors import KernelNotRunningError

log = logging.getLogger(__name__)
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


async def run_async(
    loop: asyncio.AbstractEventLoop | None,
    work: Coroutine[Any, Any, T] | Callable[[], Awaitable[T]],
    *,
    context: contextvars.Context | None = None,
) -> T:
    """Await ``work`` on ``loop`` from whatever loop the caller is on; cancelling the caller cancels it there.

    ``work`` is a coroutine, or a function returning an awaitable that is
    called on ``loop`` (so that the coroutine, and whatever it binds, is made
    there). With ``context``, it runs as a task inside that context: a
    framework's tool routed through the kernel runs on the framework's loop
    with the caller's context variables (agent identity, tracing spans,
    LangChain's run config), while the kernel awaits it from its own loop.
    """
    coro = work if asyncio.iscoroutine(work) else _awaited(work)  # type: ignore[arg-type]
    if loop is not None and on_loop(loop):
        if context is None:
            return await coro
        return await loop.create_task(coro, context=context)
    if context is None:
        return await asyncio.wrap_future(_submit(loop, coro))
    return await asyncio.wrap_future(_submit_in_context(loop, coro, context))


async def _awaited(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


def _submit_in_context(
    loop: asyncio.AbstractEventLoop | None, coro: Coroutine[Any, Any, T], context: contextvars.Context
) -> concurrent.futures.Future[T]:
    """Like ``run_coroutine_threadsafe``, with the task made inside ``context``; cancelling the future cancels the task."""
    if loop is None or loop.is_closed() or not loop.is_running():
        coro.close()
        raise KernelNotRunningError("the loop this call must run on is not running (its program stopped it)")
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

    def start() -> None:
        if outcome.cancelled():
            coro.close()  # the caller gave up before the task started
            return
        task = loop.create_task(coro, context=context)
        task.add_done_callback(lambda t: _copy_outcome(t, outcome))
        outcome.add_done_callback(lambda f: loop.call_soon_threadsafe(task.cancel) if f.cancelled() and not loop.is_closed() else None)

    loop.call_soon_threadsafe(start)
    return outcome


def _copy_outcome(task: asyncio.Task[T], outcome: concurrent.futures.Future[T]) -> None:
    if outcome.done():
        return
    if task.cancelled():
        outcome.cancel()
    elif task.exception() is not None:
        outcome.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        outcome.set_result(task.result())


def iterate_sync(loop: asyncio.AbstractEventLoop | None, agen: AsyncIterator[T]) -> Iterator[T]:
    """A blocking iterator over an async iterator that runs on ``loop``."""
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    future = _submit(loop, _pump(agen, q.put))
    try:
        while _more(item := q.get()):
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
    future = _submit(loop, _pump(agen, lambda item: caller.call_soon_threadsafe(q.put_nowait, item)))
    try:
        while _more(item := await q.get()):
            yield item
    finally:
        future.cancel()


async def _pump(agen: AsyncIterator[Any], put: Callable[[Any], object]) -> None:
    """Runs on the producing loop: hands every item to ``put``, then the failure if one ended it, then the end marker."""
    try:
        async for item in agen:
            put(item)
    except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer
        put(_Failure(exc))
    finally:
        put(_DONE)


def _more(item: Any) -> bool:
    """On the consumer's side: False at the end marker; a forwarded failure is raised here, in the consumer."""
    if isinstance(item, _Failure):
        raise item.exc
    return item is not _DONE


class LoopThread:
    """An asyncio loop running forever in a daemon thread: the home of an embedded kernel.

    Stopping it cancels whatever tasks are still on the loop and lets them run
    their cleanup before the loop closes. A loop thread still running when the
    interpreter exits is stopped the same way by an exit hook: a daemon
    thread frozen mid-loop would otherwise leave pending tasks that Python
    reports on stderr ("Task was destroyed but it is pending!") as it tears
    them down.
    """

    def __init__(self, name: str = "aios-kernel") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        _live_threads.add(self)
        _register_loop_threads_exit_hook()
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                _cancel_leftovers(self.loop)
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (its leftover tasks are cancelled and finish their cleanup) and wait for the thread."""
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # closed between the check and the call
            return
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel every task still on ``loop`` and run the loop until they have all finished (as ``asyncio.run`` does)."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.warning("task %s failed while the kernel loop stopped: %r", task.get_name(), task.exception())


#: loop threads not yet stopped, for the exit hook (weak: a stopped, dropped LoopThread is forgotten)
_live_threads: weakref.WeakSet[LoopThread] = weakref.WeakSet()
_exit_hook_registered = False

#: seconds the exit hook waits for one loop thread to wind down (a core stuck in C code must not hang exit)
_EXIT_JOIN_TIMEOUT = 10.0


def _stop_loop_threads_at_exit() -> None:
    for thread in list(_live_threads):
        if thread.alive:
            thread.stop(timeout=_EXIT_JOIN_TIMEOUT)


def _register_loop_threads_exit_hook() -> None:
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        at_exit_before_executors(_stop_loop_threads_at_exit)


def _join_program_threads() -> None:
    """Wait for the program's non-daemon threads, as the interpreter would before exiting.

    Thread-pool workers are not waited for: they idle until ``concurrent.futures``
    tells them to stop, which happens after this hook (a kernel call still
    running in a pool when the program ends gets the stop's grace period, as
    any call in flight does).
    """
    from concurrent.futures import thread as pool_threads

    workers = set(getattr(pool_threads, "_threads_queues", {}))
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is current or thread is threading.main_thread() or thread.daemon or thread in workers:
            continue
        thread.join()


def at_exit_before_executors(func: Callable[[], None]) -> None:
    """Run ``func`` at interpreter exit once the program's own threads are done, before thread pools shut down.

    ``atexit`` is too late for a kernel: by then ``concurrent.futures`` has
    refused new work to every thread pool (it hooks the interpreter's thread
    shutdown, which runs first), so a core that steps its engine in a pool
    fails on the calls still in flight. Hooks registered here run in that
    earlier phase, last registered first, after the program's non-daemon
    threads finished (they may still be using the kernel). Falls back to
    ``atexit`` where the interpreter offers no such phase.
    """
    import concurrent.futures.thread  # noqa: F401 - its hook is registered first, so this one runs before it

    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(func)
        return

    def hook() -> None:
        _join_program_threads()
        func()

    try:
        register(hook)
    except RuntimeError:  # the interpreter is already shutting down
        atexit.register(func)
