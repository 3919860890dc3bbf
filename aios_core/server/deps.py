"""What every endpoint needs first: the server state, the caller, and the caller's admission under its limits."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request

from aios_core.agents import AgentRecord
from aios_core.errors import InvalidSyscallError
from aios_core.server.auth import Principal
from aios_core.server.lifecycle import ServerState
from aios_core.server.shedding import PRINCIPAL_KEY
from aios_core.syscalls import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)


def server_state(request: Request) -> ServerState:
    return request.app.state.server  # type: ignore[no-any-return]


def principal(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer <token>``; 401 without a valid token.

    The gate in front of the body reader already authenticated it (see
    :class:`~aios_core.server.shedding.AuthGate`); its answer is reused.
    """
    checked = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    if isinstance(checked, Principal):
        return checked
    return server_state(request).tokens.authenticate(request.headers.get("authorization"))


class Admission:
    """One request admitted under its agent's rate and concurrency limits; release exactly once."""

    __slots__ = ("_held", "_state", "agent")

    def __init__(self, state: ServerState, agent: str) -> None:
        state.limiter.acquire(agent)
        self._state = state
        self.agent = agent
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._state.limiter.release(self.agent)


def agent_record(state: ServerState, name: str) -> AgentRecord:
    return state.kernel.agents.get(name)


def header_program(request: Request, record: AgentRecord) -> str:
    program = request.headers.get("x-aios-program")
    if program is None:
        return record.program or record.name
    if not _NAME.match(program):
        raise InvalidSyscallError(f"invalid X-AIOS-Program {program!r}: use 1-128 letters, digits or _.:@/+-")
    return program


def header_priority(request: Request, record: AgentRecord) -> int:
    raw = request.headers.get("x-aios-priority")
    if raw is None:
        return record.priority
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSyscallError(f"invalid X-AIOS-Priority {raw!r}: an integer from -100 to 100") from None
    return clamp_priority(value, record)


def clamp_priority(requested: int, record: AgentRecord) -> int:
    """An agent may lower its priority, never raise it above what the admin registered."""
    return min(requested, record.priority)


async def json_body(request: Request) -> Any:
    body = await request.body()
    if not body:
        raise InvalidSyscallError("the request has no body; send a JSON object")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSyscallError(f"the request body is not valid JSON: {exc}") from None
