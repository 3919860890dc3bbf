"""Names the kernel accepts, made from whatever a framework calls its agents, models and tools."""

from __future__ import annotations

import itertools
import re
import threading
import weakref
from typing import Any

_AGENT_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@/+-]+")
_TOOL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_agent_name(text: str, fallback: str = "agent") -> str:
    """``text`` with characters the kernel refuses in agent/program names replaced (frameworks allow spaces)."""
    cleaned = _AGENT_UNSAFE.sub("_", str(text)).strip("_")[:128]
    return cleaned or fallback


def safe_tool_name(text: str, fallback: str = "tool", limit: int = 64) -> str:
    cleaned = _TOOL_UNSAFE.sub("_", str(text)).strip("_")[:limit]
    return cleaned or fallback


class InstanceNames:
    """A stable, readable agent name per framework object (``langchain.ChatOpenAI.2``).

    Used when nothing better identifies the caller, so that each model client
    is still accounted for separately. Names are forgotten when their object is
    collected; objects that cannot be weakly referenced keep their name until
    their ``id`` is reused.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._names: dict[int, str] = {}
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def name_of(self, obj: Any) -> str:
        key = id(obj)
        name = self._names.get(key)
        if name is not None:
            return name
        with self._lock:
            name = self._names.get(key)
            if name is None:
                name = safe_agent_name(f"{self.prefix}.{type(obj).__name__}.{next(self._counter)}")
                self._names[key] = name
                try:
                    weakref.finalize(obj, self._names.pop, key, None)
                except TypeError:
                    pass
        return name
