"""Live dashboard views: a view's JSON pushed over server-sent events when it changes.

A stream reads its view (the same function the view's JSON endpoint answers
with) once per interval while its client is connected, and sends it only when
it differs from what that client last received; when nothing was sent for
:data:`HEARTBEAT_SECONDS` it sends a comment line, so proxies and the browser
keep the connection open. Nothing is read between a client's disconnect and
the next client, and the kernel does no extra work per syscall for it.

A stream ends, with its reader task, when

* the client disconnects (a task waits for ``http.disconnect``, so this is
  noticed at once, not at the next failed write: uvicorn drops writes to a
  gone client silently);
* the server drains for shutdown (noticed at the next interval; a last
  ``closing`` event tells the page to reconnect later);
* :meth:`StreamRegistry.close_all` is called (same ``closing`` event).

Why not sse-starlette's ``EventSourceResponse``: it ends streams on a
process-wide flag set from uvicorn's signal handler, which a server running in
a thread (``BackgroundServer``) does not install, and it leaves a watcher task
polling that flag on the loop for as long as the loop lives. Here the server's
own drain ends the stream and no task outlives its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from aios_core.errors import AIOSError
from aios_core.server.errors import error_body

log = logging.getLogger(__name__)

#: a comment line is sent when no event was sent for this long (proxies close connections idle for a minute or more)
HEARTBEAT_SECONDS = 15.0
#: keys whose values change on every read whatever happened (the read's own clock): ignored when deciding what changed
VOLATILE_KEYS = frozenset({"now", "monotonic"})
_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"}

_UNSENT = object()

#: reads one view's payload (the JSON endpoint's answer)
Read = Callable[[], Awaitable[dict[str, Any]]]


class StreamEnd(StrEnum):
    """Why a stream ended."""

    CLIENT_LEFT = "client_left"
    SERVER_DRAINING = "server_draining"
    CLOSED = "closed"


@dataclass(frozen=True)
class Feed:
    """One view a stream pushes: its event name and how to read it."""

    event: str
    read: Read


def fingerprint(payload: Any) -> Any:
    """``payload`` without the read's own timestamps (at any depth of nested objects), for comparing two reads.

    Two reads of an idle kernel differ only in ``now``/``monotonic``; they are the
    same view and the second is not sent. Lists (timeline rows, audit records)
    are compared as they are, so their contents count.
    """
    if isinstance(payload, dict):
        return {k: fingerprint(v) for k, v in payload.items() if k not in VOLATILE_KEYS}
    return payload


def encode_event(event: str, payload: dict[str, Any]) -> bytes:
    """One SSE event; JSON as the JSON endpoints write it (one line: ``json.dumps`` escapes newlines in strings)."""
    data = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return f"event: {event}\ndata: {data}\n\n".encode()


async def read_feed(feed: Feed) -> tuple[str, dict[str, Any]]:
    """Read a view for a stream that already started: a failure becomes an ``error`` event, the stream goes on."""
    try:
        return feed.event, await feed.read()
    except AIOSError as exc:
        return "error", {"view": feed.event, **error_body(exc)}
    except Exception as exc:  # noqa: BLE001 - one failed read must not end the operator's view; logged, shown, retried
        log.exception("reading the dashboard view %r failed", feed.event)
        return "error", {"view": feed.event, "error": {"code": "internal_error", "message": f"reading the {feed.event} view failed ({type(exc).__name__}); see the server log"}}


class StreamRegistry:
    """The live streams of one server: how many are open, waiting for a count, and closing them all."""

    def __init__(self) -> None:
        self._streams: set[ViewStream] = set()
        self._changed: asyncio.Condition | None = None

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def streams(self) -> frozenset[ViewStream]:
        return frozenset(self._streams)

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def add(self, stream: ViewStream) -> None:
        self._streams.add(stream)
        await self._notify()

    async def discard(self, stream: ViewStream) -> None:
        self._streams.discard(stream)
        await self._notify()

    async def wait_until(self, count: int) -> None:
        """Return once exactly ``count`` streams are open (run on the server's loop)."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._streams) == count)

    def close_all(self, reason: str) -> int:
        """End every open stream with a ``closing`` event carrying ``reason``; returns how many (run on the server's loop)."""
        for stream in self._streams:
            stream.close(reason)
        return len(self._streams)


def registry_of(app_state: State) -> StreamRegistry:
    """The registry kept on the app's state (created with the first stream)."""
    registry = getattr(app_state, "dashboard_streams", None)
    if registry is None:
        registry = StreamRegistry()
        app_state.dashboard_streams = registry
    return registry  # type: ignore[no-any-return]


class ViewStream(Response):
    """The SSE response of one client: its feeds' first reads, then a read per interval while anything changed.

    The first reads happen before the response starts (see :func:`open_stream`),
    so a bad request (an unknown agent) still gets its HTTP status.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        feeds: list[Feed],
        first: list[tuple[str, dict[str, Any]]],
        *,
        registry: StreamRegistry,
        draining: Callable[[], bool],
        interval: float,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        # as StreamingResponse does: no body attribute, so no Content-Length header
        self.status_code = 200
        self.background = None
        self.init_headers(_HEADERS)
        self.feeds = feeds
        self._first = first
        self.registry = registry
        self.draining = draining
        self.interval = interval
        self.heartbeat = heartbeat
        #: reads done so far (each feed once per interval while connected)
        self.reads = len(first)
        self.ended: StreamEnd | None = None
        self.task: asyncio.Task[Any] | None = None
        self.listener: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closing_reason = ""
        self._client_gone = False

    def close(self, reason: str) -> None:
        """Ask the stream to end with a ``closing`` event (from the server's loop)."""
        self._closing_reason = reason
        self._stop.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.task = asyncio.current_task()
        self.listener = asyncio.create_task(self._until_disconnect(receive), name="aios-dashboard-stream-listener")
        await self.registry.add(self)
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            self.ended = await self._pump(send)
            if self.ended is not StreamEnd.CLIENT_LEFT:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.listener.cancel()
            await asyncio.wait([self.listener])
            await self.registry.discard(self)

    async def _until_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._client_gone = True
        self._stop.set()

    async def _pump(self, send: Send) -> StreamEnd:
        last: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        reads = self._first
        while True:
            chunk = b""
            for (event, payload), feed in zip(reads, self.feeds, strict=True):
                key = fingerprint(payload)
                if last.get(feed.event, _UNSENT) != key:
                    last[feed.event] = key
                    chunk += encode_event(event, payload)
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent_at = loop.time()
            elif loop.time() - sent_at >= self.heartbeat:
                await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                sent_at = loop.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._stop.wait()
            if self._client_gone:
                return StreamEnd.CLIENT_LEFT
            if self._stop.is_set() or self.draining():
                reason = self._closing_reason or "the server is shutting down"
                await send({"type": "http.response.body", "body": encode_event("closing", {"reason": reason}), "more_body": True})
                return StreamEnd.CLOSED if self._closing_reason else StreamEnd.SERVER_DRAINING
            reads = [await read_feed(feed) for feed in self.feeds]
            self.reads += len(reads)


async def open_stream(
    feeds: list[Feed], *, registry: StreamRegistry, draining: Callable[[], bool], interval: float, heartbeat: float = HEARTBEAT_SECONDS
) -> ViewStream:
    """Read every feed once (errors propagate: the caller answers with their HTTP status), then the stream of the rest."""
    first = [(feed.event, await feed.read()) for feed in feeds]
    return ViewStream(feeds, first, registry=registry, draining=draining, interval=interval, heartbeat=heartbeat)
