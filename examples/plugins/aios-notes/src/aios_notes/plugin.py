"""The module the ``aios`` entry point names: its ``@hookimpl`` functions are the plugin.

The notebook is created once per process, so every kernel in the process (and
every re-collection of the registries) sees the same notes.
"""

from __future__ import annotations

from aios_core.hookspecs import hookimpl
from aios_core.tool import Tool
from aios_notes.notebook import Notebook
from aios_notes.tools import make_tools

NOTEBOOK = Notebook()


@hookimpl
def aios_register_tools() -> list[Tool]:
    return make_tools(NOTEBOOK)
