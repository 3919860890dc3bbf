"""Which agent asked for a tool call: a tool run with a model's ``ToolCall`` belongs to that model's agent.

LangChain's tool-calling pattern has no agent object: the user's code takes
``ai_msg.tool_calls`` from a model and runs each with ``tool.invoke(tool_call)``.
The kernel should schedule and account that tool call under the agent whose
model asked for it, not under a catch-all name. The chat-model replacements
remember the agent of every tool call id the kernel generated; the tool
replacements look the id up (LangChain passes it to ``run`` as
``tool_call_id``). Ids the kernel did not generate (a user's own, a replayed
conversation) are unknown and change nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from aios_core.identity import AgentIdentity

#: tool call ids remembered at most (oldest forgotten first): calls are run right after the model asked for them
CAPACITY = 4096

_owners: OrderedDict[str, AgentIdentity] = OrderedDict()
_lock = threading.Lock()


def remember(tool_calls: Iterable[Any], identity: AgentIdentity) -> None:
    """``identity``'s model asked for ``tool_calls`` (kernel ToolCalls with an ``id``)."""
    with _lock:
        for call in tool_calls:
            _owners[call.id] = identity
            _owners.move_to_end(call.id)
        while len(_owners) > CAPACITY:
            _owners.popitem(last=False)


def owner_of(tool_call_id: Any) -> AgentIdentity | None:
    """The agent whose model produced the tool call ``tool_call_id``, if the kernel generated it."""
    if not isinstance(tool_call_id, str):
        return None
    with _lock:
        return _owners.get(tool_call_id)
