"""Per-agent notebooks kept in the kernel process's memory.

Synchronous tools run in the tool manager's worker threads, several at once,
so every access goes through one lock. Limits keep one agent from filling the
process: a bad request fails with a :class:`~aios_core.errors.ToolError`, whose
message the model sees as the tool's answer.
"""

from __future__ import annotations

import threading

from aios_core.errors import ToolError


class Notebook:
    """Notes by agent, then by title. One instance serves every agent of a kernel process."""

    def __init__(self, *, max_notes: int = 100, max_chars: int = 4000) -> None:
        self.max_notes = max_notes
        self.max_chars = max_chars
        self._notes: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def add(self, agent: str, title: str, body: str) -> dict[str, object]:
        if len(body) > self.max_chars:
            raise ToolError(f"note {title!r} is {len(body)} characters long; the limit is {self.max_chars}: shorten it or split it")
        with self._lock:
            notes = self._notes.setdefault(agent, {})
            if title not in notes and len(notes) >= self.max_notes:
                raise ToolError(f"agent {agent} already has {self.max_notes} notes (the limit); clear some before adding more")
            replaced = title in notes
            notes[title] = body
            return {"title": title, "replaced": replaced, "notes": len(notes)}

    def read(self, agent: str, title: str) -> str:
        with self._lock:
            notes = self._notes.get(agent, {})
            if title not in notes:
                known = ", ".join(sorted(notes)) or "none"
                raise ToolError(f"agent {agent} has no note titled {title!r}; its notes: {known}")
            return notes[title]

    def titles(self, agent: str) -> list[str]:
        with self._lock:
            return sorted(self._notes.get(agent, {}))

    def clear(self, agent: str) -> int:
        with self._lock:
            return len(self._notes.pop(agent, {}))
