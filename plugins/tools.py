"""Built-in tools (calculator, storage files, Python execution, shell, web fetch).

Registered through the same hook as any third-party plugin; the tool manager
decides which are enabled (shell and web fetch are off unless configured).
"""

from __future__ import annotations

from aios_core.hookspecs import hookimpl
from aios_core.managers.builtin_tools import builtin_tools
from aios_core.tool import Tool


@hookimpl
def aios_register_tools() -> list[Tool]:
    return builtin_tools()
