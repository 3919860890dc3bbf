"""Helpers shared by the manager tests (imported by name: tests/managers is on sys.path)."""

from __future__ import annotations

from aios_core.agents import AgentRecord


def agent(name: str, group: str = "default") -> AgentRecord:
    """The kernel's own agent record, as the kernel passes it to managers."""
    return AgentRecord(name=name, group=group, program=name)


class Confirmations:
    """A confirmation callback whose answer a test sets, recording what it was asked."""

    def __init__(self, answer: bool | None = None) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str, dict]] = []

    def __call__(self, agent: str, action: str, detail: dict) -> bool | None:
        self.asked.append((agent, action, detail))
        return self.answer
