"""What a benchmark agent is, whatever its framework.

An agent is created for one task (``Framework.create(spec)``) and then holds a
conversation: ``send(text)`` gives it the next user message (the task, or the
environment's observation) and returns its reply. Each framework's agent is
written the way that framework's users write one (an AutoGen AssistantAgent,
a LangChain chat model with a message history, a MetaGPT Role with an Action,
an Open-Interpreter session, an OpenAI-client loop), pointed at an
OpenAI-compatible endpoint. Without AIOS the endpoint serves it; with AIOS the
framework is patched (``aios.patch``) and the same code's calls become kernel
syscalls. The SDK agent is the exception: it talks to the kernel through the
AIOS SDK with AIOS, and through the OpenAI client without.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Endpoint:
    """The OpenAI-compatible server agents are configured with (what they call without AIOS)."""

    base_url: str
    model: str
    api_key: str = "sk-local-no-key"


@dataclass(frozen=True)
class Sampling:
    """Identical on both sides: greedy decoding, one output budget, one seed."""

    max_tokens: int
    temperature: float = 0.0
    seed: int = 0
    #: client timeout: a serial server makes the last of many agents wait long, which is part of what is measured
    timeout: float = 7200.0


@dataclass(frozen=True)
class AgentSpec:
    name: str
    system: str | None
    endpoint: Endpoint
    sampling: Sampling
    #: the kernel, in the "with AIOS" setup (framework agents are patched; the SDK agent uses it directly)
    kernel: Any = None


class ChatAgent(Protocol):
    """One agent's conversation. ``send`` is a coroutine, or a plain function for threaded frameworks."""

    def send(self, text: str) -> Any: ...


class FrameworkUnavailable(RuntimeError):
    """The framework (or its AIOS adapter) is not installed here."""


class Framework(abc.ABC):
    #: the name on the command line (``--framework``)
    name: str
    #: the adapter plugin ``aios.patch`` takes (None: the agent talks to the kernel itself)
    adapter: str | None = None
    #: ``send`` blocks (a sync framework): the harness runs each agent in a worker thread
    threaded: bool = False

    def check_available(self) -> None:
        """Raise :class:`FrameworkUnavailable` with an install hint when the framework cannot run here."""

    @abc.abstractmethod
    def create(self, spec: AgentSpec) -> ChatAgent: ...

    def begin_round(self) -> None:
        """Called before each round (e.g. to drop clients bound to a previous patch state)."""

    async def end_round(self) -> None:
        """Called after each round, on the harness loop (close clients)."""
