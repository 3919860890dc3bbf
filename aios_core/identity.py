"""Which agent is calling: carried in a context variable, never in a process-wide global.

Adapters run framework code on behalf of many agents in one process, often
interleaved on one event loop or spread over threads. A ``ContextVar`` follows
each asyncio task and each thread separately, so the identity set around one
agent's work is the identity its syscalls carry, whatever else runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class AgentIdentity:
    name: str
    program: str | None = None
    group: str | None = None
    priority: int = 0
    framework: str = "sdk"


current_agent: ContextVar[AgentIdentity | None] = ContextVar("aios_current_agent", default=None)


@contextlib.contextmanager
def agent_scope(
    name: str, *, program: str | None = None, group: str | None = None, priority: int = 0, framework: str = "sdk"
) -> Iterator[AgentIdentity]:
    """Run a block as agent ``name``: syscalls made inside it (by adapters) carry this identity."""
    identity = AgentIdentity(name=name, program=program, group=group, priority=priority, framework=framework)
    token = current_agent.set(identity)
    try:
        yield identity
    finally:
        current_agent.reset(token)


def resolve(default_name: str, framework: str) -> AgentIdentity:
    """The identity in scope, or one named after the framework object making the call."""
    identity = current_agent.get()
    if identity is not None:
        return identity
    return AgentIdentity(name=default_name, framework=framework)
