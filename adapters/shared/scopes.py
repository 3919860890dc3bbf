"""Running framework code as an agent: the identity is set around each step, never leaked across tasks.

An async generator's body runs in the context of whichever task advances it,
so a ``ContextVar`` set once in its body would leak into the consumer and
could be reset from another context. Setting it around each ``__anext__``
keeps the identity exactly where the agent's code runs, including the tasks
that code starts (they copy the context at creation).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aios_core.identity import AgentIdentity, current_agent

T = TypeVar("T")


async def run_as(identity: AgentIdentity, awaitable: Awaitable[T]) -> T:
    token = current_agent.set(identity)
    try:
        return await awaitable
    finally:
        current_agent.reset(token)


async def iterate_as(identity: AgentIdentity, make: Callable[[], AsyncIterator[Any]]) -> AsyncIterator[Any]:
    """Iterate ``make()``'s async iterator with ``identity`` in scope while each item is produced."""
    token = current_agent.set(identity)
    try:
        inner = make()
    finally:
        current_agent.reset(token)
    try:
        while True:
            token = current_agent.set(identity)
            try:
                item = await inner.__anext__()
            except StopAsyncIteration:
                return
            finally:
                current_agent.reset(token)
            yield item
    finally:
        aclose = getattr(inner, "aclose", None)
        if aclose is not None:
            await aclose()
