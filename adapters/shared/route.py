"""One adapter's way into the kernel: options, agent registration, LLM syscalls (sync, async, streaming).

Framework adapters translate their request types into an :class:`LLMRequest`
and their agent identity into an :class:`AgentIdentity`; the :class:`Route`
does the rest the same way for every framework, against an embedded kernel
or a remote one: both implement :class:`~aios_core.port.KernelPort`, the only
way an adapter reaches a kernel. Agent identities are derived here, once, for
every framework (:meth:`Route.identity` and :meth:`Route.own_identity`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, fields
from typing import Any, get_args

from aios_core.errors import ConfigError
from aios_core.identity import AgentIdentity, current_agent
from aios_core.port import KernelPort
from aios_core.syscalls import LLMRequest, LLMResponse, LLMSyscall, StreamPiece
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

    def __init__(self, kernel: KernelPort, framework: str, options: RouteOptions) -> None:
        self.kernel = kernel
        self.framework = framework
        self.options = options

    # ------------------------------------------------------------------ identity

    def identity(self, default_name: str, *, program: str | None = None) -> AgentIdentity:
        """The agent in scope (``aios.agent_scope`` or the adapter's own scope), else ``default_name``.

        For calls made by an object that is not itself an agent (a model client, an interpreter, a tool):
        whoever is in scope is the caller.
        """
        identity = current_agent.get()
        if identity is not None:
            return identity
        return AgentIdentity(name=default_name, program=program, group=self.options.group, priority=self.options.priority, framework=self.framework)

    def own_identity(self, name: str, *, program: str | None = None) -> AgentIdentity:
        """The identity of a framework agent named ``name`` (an AutoGen agent, a MetaGPT role) running inside ``scope``.

        The agent keeps its own name; program, group and priority come from the scope around it (a team run,
        ``aios.agent_scope``), else from the patch options. ``program`` overrides the scope's program.
        """
        outer = current_agent.get()
        return AgentIdentity(
            name=name,
            program=program or (outer.program if outer is not None else None),
            group=(outer.group if outer is not None else None) or self.options.group,
            priority=(outer.priority if outer is not None else 0) or self.options.priority,
            framework=self.framework,
        )

    def kernel_model(self, name: str | None) -> str | None:
        """``name`` when the kernel serves a model (or core) by that name, else None (the route's model is used)."""
        if not name:
            return None
        return name if name in self.kernel.served_models() else None

    def ensure_agent(self, identity: AgentIdentity) -> None:
        """Register the agent (with its framework and group) the first time it calls."""
        if self.kernel.has_agent(identity.name):
            return
        self.kernel.register_agent(
            identity.name,
            group=identity.group or self.options.group,
            program=identity.program,
            priority=identity.priority or self.options.priority,
            # a user's aios.agent_scope() says "sdk" unless told otherwise: the calls come through this framework
            framework=self.framework if identity.framework in ("", "sdk") else identity.framework,
        )

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
