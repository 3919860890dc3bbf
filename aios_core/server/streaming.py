"""Handing an LLM syscall's stream over to an SSE response, shared by ``/v1/chat/completions`` and ``/syscall/stream``.

Both endpoints need the same careful hand-over, and a slip in either one leaks
an agent's concurrency slot or a generation nobody reads:

* the first piece is awaited *before* the response starts, so errors raised at
  submission (unknown model, context length, queue full, access denied) still
  get their HTTP status instead of a 200 stream with an error event in it;
* a client that leaves while waiting for that piece gets 499 and its
  generation is cancelled; any failure closes the kernel stream;
* once streaming, the syscall is registered as in flight (so shutdown can fail
  it) and the response's ``on_close`` untracks it, releases the admission and
  closes the kernel stream, however the response ends.

Only the event format differs between the endpoints; it is passed in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import Response

from aios_core.server.deps import Admission
from aios_core.server.lifecycle import ClientGone, ClosingStreamingResponse, ServerState, run_watched
from aios_core.syscalls import LLMSyscall, StreamPiece

#: turns the first piece and the rest of the kernel stream into the response body's bytes
EventWriter = Callable[[StreamPiece, AsyncIterator[StreamPiece]], AsyncIterator[bytes]]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def stream_syscall(state: ServerState, request: Request, sc: LLMSyscall, admission: Admission, events: EventWriter) -> Response:
    """Start ``sc``'s stream and return the SSE response that carries it (or 499 if the client left first).

    The admission belongs to this call from the moment it is made: it is
    released when the returned stream ends, or before returning if no stream
    was handed over (error, client gone), so the caller must not release it.
    """
    handed_over = False
    try:
        pieces = state.kernel.astream(sc)
        try:
            first = await run_watched(state, request.receive, sc.id, "llm", pieces.__anext__())
        except ClientGone:
            await pieces.aclose()  # type: ignore[attr-defined]
            return Response(status_code=499)
        except BaseException:
            await pieces.aclose()  # type: ignore[attr-defined]
            raise
        state.track(sc.id, "llm", None)

        async def close() -> None:
            state.untrack(sc.id)
            admission.release()
            await pieces.aclose()  # type: ignore[attr-defined]

        response = ClosingStreamingResponse(events(first, pieces), on_close=close, media_type="text/event-stream", headers=dict(_SSE_HEADERS))
        handed_over = True
        return response
    finally:
        if not handed_over:
            admission.release()
