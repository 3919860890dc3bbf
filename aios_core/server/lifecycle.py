"""The server's view of its requests: what is in flight, draining on shutdown, and clients that leave.

Graceful shutdown happens in three steps (driven by :class:`~aios_core.server.app.KernelServer`):

1. **drain**: readiness turns 503 and new requests are refused with a clean
   503 error, while requests already running continue;
2. **grace**: in-flight requests get ``grace_seconds`` to finish; the server
   waits on an event set when the last one ends (no polling);
3. **abort**: what is still running is failed with
   :class:`ServerShuttingDownError` (HTTP 503, or an SSE ``error`` event on a
   stream that already started), and its generation is cancelled in the
   kernel, so every client gets an answer it can act on.

A client that disconnects cancels its own syscall at once (see
:func:`run_watched`): its generation stops and its batch slot and KV are freed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.responses import StreamingResponse

from aios_core.kernel import Kernel
from aios_core.server.auth import TokenStore
from aios_core.server.errors import ServerShuttingDownError, error_body
from aios_core.server.limits import ASGIApp, RateLimiter, Receive, Scope, Send, send_json_error
from aios_core.server.metrics import HttpMetrics, TokenRates
from aios_core.server.settings import ServerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

#: endpoints that answer while the server drains (probes and scrapes)
ALWAYS_OPEN = frozenset({"/healthz", "/readyz", "/metrics"})


class ClientGone(Exception):
    """The client disconnected before its answer was ready; its work was cancelled."""


class ServerState:
    """Everything the endpoints share: the kernel, tokens, limits, metrics and the in-flight registry."""

    def __init__(self, kernel: Kernel, settings: ServerSettings, tokens: TokenStore) -> None:
        self.kernel = kernel
        self.settings = settings
        self.tokens = tokens
        self.limiter = RateLimiter(settings.rate_per_agent, settings.burst_per_agent, settings.max_concurrent_per_agent)
        self.metrics = HttpMetrics()
        self.rates = TokenRates()
        self.started = time.time()
        self.draining = False
        self.aborting = False
        self._active = 0
        self._idle: asyncio.Event | None = None
        #: syscalls the server submitted and that have not answered: id -> (kind, task running it or None for streams)
        self._syscalls: dict[str, tuple[str, asyncio.Task[Any] | None]] = {}
        #: programs each agent used recently (for ``aios ps``), most recent last
        self.programs: dict[str, OrderedDict[str, float]] = {}

    # ------------------------------------------------------------------ request accounting

    def request_started(self) -> None:
        self._active += 1
        if self._idle is not None:
            self._idle.clear()

    def request_ended(self) -> None:
        self._active -= 1
        if self._active == 0 and self._idle is not None:
            self._idle.set()

    @property
    def active_requests(self) -> int:
        return self._active

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight (or ``timeout``); True when idle."""
        if self._active == 0:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------ syscalls in flight

    def track(self, syscall_id: str, kind: str, task: asyncio.Task[Any] | None) -> None:
        self._syscalls[syscall_id] = (kind, task)

    def untrack(self, syscall_id: str) -> None:
        self._syscalls.pop(syscall_id, None)

    def note_program(self, agent: str, program: str) -> None:
        seen = self.programs.setdefault(agent, OrderedDict())
        seen[program] = time.time()
        seen.move_to_end(program)
        while len(seen) > 32:
            seen.popitem(last=False)

    # ------------------------------------------------------------------ shutdown

    def begin_drain(self) -> None:
        if not self.draining:
            log.info("draining: refusing new requests, %d in flight", self._active)
        self.draining = True

    def abort_inflight(self) -> int:
        """Fail every syscall still running with ServerShuttingDownError; returns how many."""
        self.aborting = True
        reason = ServerShuttingDownError("the server is shutting down and this request did not finish within its grace period; retry later")
        llm_ids = {sid for sid, (kind, _) in self._syscalls.items() if kind == "llm"}
        count = 0
        for pool in list(self.kernel.pools.values()):
            for flight in pool.flights():
                if flight.id in llm_ids:
                    pool.cancel(flight, reason)
                    count += 1
        for sid, (kind, task) in list(self._syscalls.items()):
            if kind != "llm" and task is not None and not task.done():
                task.cancel()
                count += 1
        return count


async def run_watched(state: ServerState, receive: Receive, syscall_id: str, kind: str, work: Awaitable[T]) -> T:
    """Run ``work`` (a syscall) while watching the client: if it disconnects, cancel the work.

    The work runs in its own task so that shutdown can cancel it
    (:meth:`ServerState.abort_inflight`) and so that the client's channel can
    be watched for ``http.disconnect`` meanwhile.
    """
    task: asyncio.Task[T] = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(receive))
    state.track(syscall_id, kind, task)
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    finally:
        state.untrack(syscall_id)
    if task.done():
        watcher.cancel()
        if task.cancelled():
            # only shutdown cancels this task from outside
            raise ServerShuttingDownError("the server is shutting down; the request was cancelled before it finished, retry later")
        return task.result()
    task.cancel()
    try:
        await task
    except BaseException:  # noqa: BLE001 - the client is gone; the outcome has no reader
        pass
    raise ClientGone()


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that always runs ``on_close`` when it ends, however it ends.

    A body generator's ``finally`` does not run if the generator never
    started (the client left before the first byte was sent), so what a
    stream holds (its agent's admission, its kernel stream) is released here.
    """

    def __init__(self, content: AsyncIterator[bytes], *, on_close: Callable[[], Awaitable[None]], **options: Any) -> None:
        super().__init__(content, **options)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            finally:
                await self._on_close()


class RequestTracker:
    """ASGI middleware: counts requests in flight, refuses new ones while draining, records HTTP metrics."""

    def __init__(self, app: ASGIApp, state_of: Callable[[], ServerState | None]) -> None:
        self.app = app
        self.state_of = state_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state_of()
        if scope["type"] != "http" or state is None:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if state.draining and path not in ALWAYS_OPEN:
            error = ServerShuttingDownError("the server is shutting down and accepts no new requests; retry against another kernel or later")
            await send_json_error(send, error.http_status, error_body(error), [(b"connection", b"close"), (b"retry-after", b"1")])
            state.metrics.observe(path, scope.get("method", ""), error.http_status, 0.0)
            return
        status = 0
        start = time.perf_counter()

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        state.request_started()
        try:
            await self.app(scope, receive, tracking_send)
        finally:
            state.request_ended()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            state.metrics.observe(template, scope.get("method", ""), status or 499, time.perf_counter() - start)
