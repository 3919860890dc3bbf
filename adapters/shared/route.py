"""One adapter's way into the kernel: options, agent registration, LLM syscalls (sync, async, streaming).

Framework adapters translate their request types into an :class:`LLMRequest`
and their agent identity into an :class:`AgentIdentity`; the :class:`Route`
does the rest the same way for every framework, against an embedded kernel
or a remote one (anything with ``call``/``acall``/``stream``/``astream``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, fields
from typing import Any, get_args

from aios_core.errors import ConfigError
from aios_core.identity import AgentIdentity, current_agent
from aios_core.llm_pool import StreamPiece
from aios_core.syscalls import LLMRequest, LLMResponse, LLMSyscall
from aios_core.tool import SideEffect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteOptions:
    """The ``**agent_options`` of ``aios.patch(name, kernel, **agent_options)``."""

    #: kernel model or core that serves the framework's calls (None: the kernel's default model)
    model: str | None = None
    #: max_tokens when the framework does not set one (None: the kernel's request default)
    max_tokens: int | None = None
    #: seconds a syscall may wait and run in total (None: no limit)
    timeout: float | None = None
    #: scheduling priority of the framework's agents unless ``aios.agent_scope`` says otherwise
    priority: int = 0
    #: access group the framework's agents are registered in (None: the kernel's default group)
    group: str | None = None
    #: seconds a framework tool may run under the tool manager
    tool_timeout: float = 60.0
    #: side-effect class of framework tools for access control ("irreversible" needs a confirmation)
    tool_side_effect: SideEffect = "write"
    #: calls of one framework tool that may run at once across all agents
    tool_concurrency: int = 4

    @classmethod
    def parse(cls, framework: str, options: dict[str, Any]) -> RouteOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"aios.patch({framework!r}) got unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}"
            )
        side_effect = options.get("tool_side_effect", "write")
        if side_effect not in get_args(SideEffect):
            raise ConfigError(f"aios.patch({framework!r}): tool_side_effect must be one of {get_args(SideEffect)}, got {side_effect!r}")
        return cls(**options)


class Route:
    """Sends one framework's calls to ``kernel`` under ``options``."""

    def __init__(self, kernel: Any, framework: str, options: RouteOptions) -> None:
        from aios.adapters.shared.tool_routing import ToolRouter

        self.kernel = kernel
        self.framework = framework
        self.options = options
        self.tools = ToolRouter(self)
        self._registered: set[str] = set()

    # ------------------------------------------------------------------ identity

    def identity(self, default_name: str) -> AgentIdentity:
        """The agent in scope (``aios.agent_scope`` or the adapter's own scope), else ``default_name``."""
        identity = current_agent.get()
        if identity is not None:
            return identity
        return AgentIdentity(name=default_name, group=self.options.group, priority=self.options.priority, framework=self.framework)

    def ensure_agent(self, identity: AgentIdentity) -> None:
        """Register the agent (with its framework and group) the first time it calls."""
        agents = getattr(self.kernel, "agents", None)
        if agents is not None:
            if identity.name in agents:
                return
        elif identity.name in self._registered:
            return
        register = getattr(self.kernel, "register_agent", None)
        if register is None:
            return
        register(
            identity.name,
            group=identity.group or self.options.group,
            program=identity.program,
            priority=identity.priority or self.options.priority,
            # a user's aios.agent_scope() says "sdk" unless told otherwise: the calls come through this framework
            framework=self.framework if identity.framework in ("", "sdk") else identity.framework,
        )
        self._registered.add(identity.name)

    def syscall_fields(self, identity: AgentIdentity) -> dict[str, Any]:
        return {
            "agent": identity.name,
            "program": identity.program,
            "priority": identity.priority or self.options.priority,
            "timeout": self.options.timeout,
        }

    # ------------------------------------------------------------------ LLM calls

    def request(self, **fields_: Any) -> LLMRequest:
        """An LLMRequest with the route's model and default max_tokens filled in where the framework said nothing."""
        if self.options.model is not None:
            fields_.setdefault("model", self.options.model)
        if fields_.get("max_tokens") is None:
            fields_.pop("max_tokens", None)
            if self.options.max_tokens is not None:
                fields_["max_tokens"] = self.options.max_tokens
        return LLMRequest(**fields_)

    def llm_syscall(self, identity: AgentIdentity, request: LLMRequest) -> LLMSyscall:
        self.ensure_agent(identity)
        return LLMSyscall(request=request, **self.syscall_fields(identity))

    async def acomplete(self, identity: AgentIdentity, request: LLMRequest) -> LLMResponse:
        return await self.kernel.acall(self.llm_syscall(identity, request))  # type: ignore[no-any-return]

    def complete(self, identity: AgentIdentity, request: LLMRequest) -> LLMResponse:
        return self.kernel.call(self.llm_syscall(identity, request))  # type: ignore[no-any-return]

    async def astream(self, identity: AgentIdentity, request: LLMRequest) -> AsyncIterator[StreamPiece]:
        async for piece in self.kernel.astream(self.llm_syscall(identity, request)):
            yield piece

    def stream(self, identity: AgentIdentity, request: LLMRequest) -> Iterator[StreamPiece]:
        return iter(self.kernel.stream(self.llm_syscall(identity, request)))
