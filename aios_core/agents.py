"""Who is calling: the kernel's table of agents, their access group and their accounting.

A syscall names an agent; a name the table does not hold is refused with
:class:`UnknownAgentError` (unless the kernel was configured to register agents
on first use, as the embedded adapters do). Each record accumulates what the
agent has cost, which ``aios ps`` and the bench report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aios_core.errors import InvalidSyscallError, UnknownAgentError
from aios_core.syscalls import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)


def program_key(agent: str, program: str | None) -> str:
    """The scheduler's name for ``agent``'s program ``program``: programs are per agent.

    Program-level policies (PLAS) rank a call by the service its program has
    attained, so a program id an agent chooses freely (the ``program`` field,
    ``X-AIOS-Program``) must not name another agent's program: labelling calls
    ``program='bob'`` would otherwise charge them to bob. The key is the agent
    name for its default program and ``"agent program"`` otherwise; names
    never contain a space, so no two (agent, program) pairs share a key.
    """
    if not program or program == agent:
        return agent
    return f"{agent} {program}"


@dataclass(eq=False)
class AgentRecord:
    name: str
    group: str = "default"
    #: default program (session) of this agent's syscalls
    program: str = ""
    priority: int = 0
    framework: str = "sdk"
    created: float = 0.0
    last_seen: float = 0.0
    syscalls: int = 0
    failed: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    waiting_time: float = 0.0
    service_time: float = 0.0
    preemptions: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "program": self.program,
            "framework": self.framework,
            "priority": self.priority,
            "syscalls": self.syscalls,
            "failed": self.failed,
            "in_flight": self.in_flight,
            "state": "running" if self.in_flight else "idle",
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "waiting_time": round(self.waiting_time, 6),
            "service_time": round(self.service_time, 6),
            "preemptions": self.preemptions,
            "by_kind": dict(self.by_kind),
        }


class AgentTable:
    def __init__(self, *, auto_register: bool = False, default_group: str = "default", max_agents: int = 100_000) -> None:
        self.auto_register = auto_register
        self.default_group = default_group
        self.max_agents = max_agents
        self._agents: dict[str, AgentRecord] = {}

    def register(
        self,
        name: str,
        *,
        group: str | None = None,
        program: str | None = None,
        priority: int = 0,
        framework: str = "sdk",
        now: float = 0.0,
    ) -> AgentRecord:
        """Add an agent, or update the options of an existing one (registering twice is harmless)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidSyscallError(f"invalid agent name {name!r}: use 1-128 letters, digits or _.:@/+-")
        record = self._agents.get(name)
        if record is None:
            if len(self._agents) >= self.max_agents:
                raise InvalidSyscallError(f"the kernel already has {self.max_agents} agents; unregister finished ones first")
            record = self._agents[name] = AgentRecord(
                name=name, group=group or self.default_group, program=program or name, priority=priority, framework=framework, created=now
            )
        else:
            if group is not None:
                record.group = group
            if program is not None:
                record.program = program
            record.priority = priority or record.priority
        return record

    def get(self, name: str) -> AgentRecord:
        record = self._agents.get(name)
        if record is None:
            if self.auto_register:
                return self.register(name)
            raise UnknownAgentError(
                f"unknown agent {name!r}: register it first (kernel.register_agent({name!r}) or kernel.agent({name!r}))",
                agent=name,
            )
        return record

    def unregister(self, name: str) -> AgentRecord | None:
        return self._agents.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __len__(self) -> int:
        return len(self._agents)

    def all(self) -> list[AgentRecord]:
        return list(self._agents.values())
