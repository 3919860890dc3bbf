"""Where each LLM call's time went, measured the same way for both setups.

Without AIOS the agents' calls are HTTP requests to a server that serves one
request at a time. :class:`HttpCallRecorder` taps httpx's transports (every
framework's OpenAI client goes through httpx) for the requests to that server:
when each was sent, when its last byte arrived, and the token usage in its
body. For a serial, non-preemptive server the request that finishes next
started when the previous one finished or when it was sent, whichever is
later, so service and queue wait follow exactly from those timestamps.

With AIOS every call is a syscall. :class:`KernelCallRecorder` is a kernel
plugin (``aios_syscall_finished``) reading each syscall's timing record
(turnaround, waiting, service), and it wraps the kernel's four entry points
to time each call as the caller sees it: the difference is the kernel's
overhead per call (validation, queues, the thread hop, result delivery).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from aios_core.hookspecs import hookimpl

#: bytes of a response body kept for reading its usage (bodies of chat completions are small)
_KEEP = 4 * 1024 * 1024


@dataclass
class CallRecord:
    start: float
    end: float | None = None
    latency: float | None = None
    wait: float | None = None
    service: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    overhead: float | None = None
    agent: str | None = None
    ok: bool = True
    #: prompt tokens the server took from its cache, when it says (None: it did not)
    cached_tokens: int | None = None


def summarize_calls(calls: list[CallRecord]) -> dict[str, Any]:
    done = [c for c in calls if c.latency is not None]
    latency = sum(c.latency for c in done if c.latency is not None)
    wait = sum(c.wait for c in done if c.wait is not None)
    overheads = [c.overhead for c in done if c.overhead is not None]
    return {
        "llm_calls": len(done),
        "failed_calls": sum(1 for c in done if not c.ok),
        "prompt_tokens": sum(c.prompt_tokens for c in done),
        # over the calls whose server said; None when none did
        "cached_prompt_share": _cached_share(done),
        "completion_tokens": sum(c.completion_tokens for c in done),
        "queue_wait_share": wait / latency if latency > 0 else 0.0,
        "mean_call_latency": latency / len(done) if done else 0.0,
        "overhead_us_median": 1e6 * statistics.median(overheads) if overheads else None,
        "overhead_share": sum(overheads) / latency if overheads and latency > 0 else None,
    }


def _cached_share(calls: list[CallRecord]) -> float | None:
    known = [c for c in calls if c.cached_tokens is not None]
    prompt = sum(c.prompt_tokens for c in known)
    return sum(c.cached_tokens or 0 for c in known) / prompt if known and prompt else None


# --------------------------------------------------------------------------- without AIOS: HTTP


class _Tap:
    def __init__(self, recorder: "HttpCallRecorder", record: CallRecord, sse: bool) -> None:
        self.recorder, self.record, self.sse = recorder, record, sse
        self.body = bytearray()
        self.finished = False

    def feed(self, chunk: bytes) -> None:
        if len(self.body) < _KEEP:
            self.body += chunk[: _KEEP - len(self.body)]

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.record.end = time.perf_counter()
        self.record.latency = self.record.end - self.record.start
        prompt, completion, cached = _usage(bytes(self.body), self.sse)
        self.record.prompt_tokens, self.record.completion_tokens = prompt, completion
        self.record.cached_tokens = cached
        self.recorder.finished(self.record)


def _cached(event: dict[str, Any]) -> int | None:
    """Prompt tokens a response says came from the server's cache: OpenAI's field, or llama-server's timings."""
    details = (event.get("usage") or {}).get("prompt_tokens_details") or {}
    if details.get("cached_tokens") is not None:
        return int(details["cached_tokens"])
    timings = event.get("timings") or {}
    return int(timings["cache_n"]) if timings.get("cache_n") is not None else None


def _usage(body: bytes, sse: bool) -> tuple[int, int, int | None]:
    """Token usage from a chat-completion body (prompt, completion, cached prompt tokens or None); for a stream
    without a usage chunk, one token per content chunk."""
    text = body.decode("utf-8", "replace")
    if not sse:
        try:
            data = json.loads(text)
            usage = data.get("usage") or {}
        except (ValueError, AttributeError):
            return 0, 0, None
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), _cached(data)
    chunks = 0
    cached: int | None = None
    usage = None
    for line in text.splitlines():
        if not line.startswith("data:") or line.strip() == "data: [DONE]":
            continue
        try:
            event = json.loads(line[5:])
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        found = _cached(event)
        if found is not None:
            cached = found
        if event.get("usage"):
            usage = event["usage"]
        for choice in event.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                chunks += 1
    if usage is not None:
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), cached
    return 0, chunks, cached


class _AsyncTapStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, tap: _Tap) -> None:
        self.inner, self.tap = inner, tap

    async def __aiter__(self) -> Any:
        async for chunk in self.inner:
            self.tap.feed(chunk)
            yield chunk
        self.tap.finish()

    async def aclose(self) -> None:
        self.tap.finish()
        await self.inner.aclose()


class _SyncTapStream(httpx.SyncByteStream):
    def __init__(self, inner: Any, tap: _Tap) -> None:
        self.inner, self.tap = inner, tap

    def __iter__(self) -> Any:
        for chunk in self.inner:
            self.tap.feed(chunk)
            yield chunk
        self.tap.finish()

    def close(self) -> None:
        self.tap.finish()
        self.inner.close()


class HttpCallRecorder:
    """Records the chat-completion requests sent to ``base_url`` while installed."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.calls: list[CallRecord] = []
        self._lock = threading.Lock()
        self._saved: tuple[Any, Any] | None = None

    def matches(self, request: httpx.Request) -> bool:
        """Whether ``request`` is a completion call to the server this recorder watches."""
        url = str(request.url)
        return url.startswith(self.base_url) and url.rstrip("/").endswith("completions")

    def finished(self, record: CallRecord) -> None:
        """Keep a call whose response has been read to its end."""
        with self._lock:
            self.calls.append(record)

    def _failed(self, record: CallRecord) -> None:
        """A call that raised before any response: kept as failed."""
        record.ok = False
        _Tap(self, record, False).finish()

    def _tapped(self, response: httpx.Response, record: CallRecord, stream_type: Any) -> httpx.Response:
        """The response with its body stream tapped, so the call is timed to its last byte (or SSE event)."""
        record.ok = response.status_code < 400
        sse = "text/event-stream" in response.headers.get("content-type", "")
        response.stream = stream_type(response.stream, _Tap(self, record, sse))
        return response

    def install(self) -> None:
        if self._saved is not None:
            return
        async_orig = httpx.AsyncHTTPTransport.handle_async_request
        sync_orig = httpx.HTTPTransport.handle_request
        recorder = self

        async def handle_async_request(transport: Any, request: httpx.Request) -> httpx.Response:
            if not recorder.matches(request):
                return await async_orig(transport, request)
            record = CallRecord(start=time.perf_counter())
            try:
                response = await async_orig(transport, request)
            except BaseException:
                recorder._failed(record)
                raise
            return recorder._tapped(response, record, _AsyncTapStream)

        def handle_request(transport: Any, request: httpx.Request) -> httpx.Response:
            if not recorder.matches(request):
                return sync_orig(transport, request)
            record = CallRecord(start=time.perf_counter())
            try:
                response = sync_orig(transport, request)
            except BaseException:
                recorder._failed(record)
                raise
            return recorder._tapped(response, record, _SyncTapStream)

        self._saved = (async_orig, sync_orig)
        httpx.AsyncHTTPTransport.handle_async_request = handle_async_request  # type: ignore[method-assign]
        httpx.HTTPTransport.handle_request = handle_request  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._saved is None:
            return
        httpx.AsyncHTTPTransport.handle_async_request, httpx.HTTPTransport.handle_request = self._saved  # type: ignore[method-assign]
        self._saved = None

    def take(self) -> list[CallRecord]:
        """The calls recorded since the last take, with wait and service derived for a serial server."""
        with self._lock:
            calls, self.calls = self.calls, []
        prev_end = float("-inf")
        for c in sorted((c for c in calls if c.end is not None), key=lambda c: c.end):  # type: ignore[arg-type, return-value]
            assert c.end is not None
            began = max(c.start, prev_end)
            c.service = c.end - began
            c.wait = (c.latency or 0.0) - c.service
            prev_end = c.end
        return calls


# --------------------------------------------------------------------------- with AIOS: syscalls


@dataclass
class _KernelTimes:
    turnaround: float
    waiting: float
    service: float
    agent: str
    ok: bool


class KernelCallRecorder:
    """A kernel plugin plus wrappers of the kernel's call entry points; register before the kernel starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kernel_side: dict[str, _KernelTimes] = {}
        self._client_side: list[tuple[str, float, int, int, int | None]] = []
        self.tool_calls: list[float] = []

    @hookimpl
    def aios_syscall_finished(self, syscall: Any, error: Any) -> None:
        timing = syscall.timing
        if syscall.kind != "llm":
            if timing.turnaround is not None:
                with self._lock:
                    self.tool_calls.append(timing.turnaround)
            return
        with self._lock:
            self._kernel_side[syscall.id] = _KernelTimes(
                turnaround=timing.turnaround or 0.0, waiting=timing.waiting or 0.0, service=timing.service,
                agent=syscall.agent, ok=error is None,
            )

    def client_saw(self, syscall_id: str, latency: float, response: Any) -> None:
        """Keep the latency the calling agent saw for a syscall, with the token counts of its response."""
        usage = getattr(response, "usage", None)
        with self._lock:
            self._client_side.append((
                syscall_id, latency, getattr(usage, "prompt_tokens", 0), getattr(usage, "completion_tokens", 0),
                getattr(usage, "cached_tokens", None),
            ))

    def wrap(self, kernel: Any) -> None:
        """Time the kernel's entry points as callers see them (instance attributes shadow the methods)."""
        acall, call, astream, stream = kernel.acall, kernel.call, kernel.astream, kernel.stream
        rec = self

        async def timed_acall(syscall: Any) -> Any:
            t = time.perf_counter()
            result = await acall(syscall)
            if getattr(result, "syscall_id", None):
                rec.client_saw(result.syscall_id, time.perf_counter() - t, result)
            return result

        def timed_call(syscall: Any) -> Any:
            t = time.perf_counter()
            result = call(syscall)
            if getattr(result, "syscall_id", None):
                rec.client_saw(result.syscall_id, time.perf_counter() - t, result)
            return result

        async def timed_astream(syscall: Any) -> Any:
            t = time.perf_counter()
            async for piece in astream(syscall):
                if piece.response is not None:
                    rec.client_saw(piece.response.syscall_id, time.perf_counter() - t, piece.response)
                yield piece

        def timed_stream(syscall: Any) -> Any:
            t = time.perf_counter()
            for piece in stream(syscall):
                if piece.response is not None:
                    rec.client_saw(piece.response.syscall_id, time.perf_counter() - t, piece.response)
                yield piece

        kernel.acall, kernel.call, kernel.astream, kernel.stream = timed_acall, timed_call, timed_astream, timed_stream

    def take(self) -> list[CallRecord]:
        """The LLM calls finished since the last take (client view joined with the kernel's timing)."""
        with self._lock:
            kernel_side, self._kernel_side = self._kernel_side, {}
            client_side, self._client_side = self._client_side, []
            self.tool_calls = []
        by_id = {sid: (lat, p, c, cached) for sid, lat, p, c, cached in client_side}
        calls = []
        for sid, k in kernel_side.items():
            lat, p, c, cached = by_id.get(sid, (None, 0, 0, None))
            calls.append(
                CallRecord(
                    start=0.0, latency=k.turnaround if lat is None else lat, wait=k.waiting, service=k.service,
                    prompt_tokens=p, completion_tokens=c, overhead=None if lat is None else max(0.0, lat - k.turnaround),
                    agent=k.agent, ok=k.ok, cached_tokens=cached,
                )
            )
        return calls
