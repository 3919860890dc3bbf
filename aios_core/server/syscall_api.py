"""The syscall API over HTTP: ``POST /syscall`` (JSON) and ``POST /syscall/stream`` (SSE).

The body is a syscall exactly as :func:`aios_core.syscalls.parse_syscall`
accepts it (``{"kind": "llm", "agent": ..., "request": {...}}``), tagged by
:mod:`aios_core.server.wire` where it carries bytes. Its ``agent`` must be the
token's agent (403 otherwise); its id and timing are assigned by the server.

``/syscall`` answers ``{"result": <wire-encoded result>, "syscall": {"id", "timing"}}``.
``/syscall/stream`` (LLM syscalls only) sends SSE events::

    event: delta      data: {"delta": "text"}
    event: response   data: {"result": <LLMResponse>, "syscall": {...}}
    event: error      data: {"error": {"message", "type", "code", ...}}

Errors before the first event have their HTTP status; later ones arrive as an
``error`` event. A client that disconnects cancels its syscall.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from aios_core.errors import AIOSError, InvalidSyscallError
from aios_core.server.deps import Admission, agent_record, clamp_priority, principal, server_state
from aios_core.server.errors import error_body
from aios_core.server.lifecycle import ClientGone, ServerState, run_watched
from aios_core.server.streaming import stream_syscall
from aios_core.server.wire import encode, syscall_from_wire, syscall_receipt
from aios_core.syscalls import AnySyscall, LLMSyscall, StreamPiece

router = APIRouter()


async def _admit_syscall(request: Request, state: ServerState) -> tuple[AnySyscall, Admission]:
    who = principal(request)
    agent = who.require_agent()
    admission = Admission(state, agent)
    try:
        body = await request.body()
        if not body:
            raise InvalidSyscallError("the request has no body; send a syscall as JSON")
        sc = syscall_from_wire(body)
        who.act_as(sc.agent)
        record = agent_record(state, agent)
        sc.priority = clamp_priority(sc.priority, record)
        state.note_program(agent, sc.program or agent)
        return sc, admission
    except BaseException:
        admission.release()
        raise


def _json(data: Any) -> Response:
    return Response(json.dumps(data), media_type="application/json")


@router.post("/syscall")
async def syscall(request: Request) -> Response:
    """Run one syscall of the token's agent to completion."""
    state = server_state(request)
    sc, admission = await _admit_syscall(request, state)
    try:
        result = await run_watched(state, request.receive, sc.id, sc.kind, state.kernel.acall(sc))
    except ClientGone:
        return Response(status_code=499)
    finally:
        admission.release()
    return _json({"result": encode(result), "syscall": syscall_receipt(sc)})


@router.post("/syscall/stream")
async def syscall_stream(request: Request) -> Response:
    """Stream an LLM syscall of the token's agent as server-sent events."""
    state = server_state(request)
    sc, admission = await _admit_syscall(request, state)
    if not isinstance(sc, LLMSyscall):
        admission.release()
        raise InvalidSyscallError(f"only LLM syscalls stream; send this {sc.kind} syscall to POST /syscall")
    return await stream_syscall(state, request, sc, admission, lambda first, pieces: _events(sc, first, pieces))


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: ".encode() + json.dumps(data).encode() + b"\n\n"


async def _events(sc: LLMSyscall, first: StreamPiece, pieces: AsyncIterator[StreamPiece]) -> AsyncIterator[bytes]:
    try:
        piece: StreamPiece | None = first
        while piece is not None:
            if piece.delta:
                yield _event("delta", {"delta": piece.delta})
            if piece.response is not None:
                yield _event("response", {"result": encode(piece.response), "syscall": syscall_receipt(sc)})
                return
            piece = await anext(pieces, None)  # type: ignore[arg-type]
        yield _event("error", error_body(AIOSError("the kernel ended the stream without a final response")))
    except AIOSError as exc:
        yield _event("error", error_body(exc))
