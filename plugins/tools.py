"""Built-in tools (calculator, storage files, Python execution, shell, web fetch)."""

from __future__ import annotations

from aios_core.hookspecs import hookimpl
from aios_core.tool import Tool


@hookimpl
def aios_register_tools() -> list[Tool]:
    # filled in by the tool manager's built-in set (aios_core/managers/builtin_tools.py)
    return []
