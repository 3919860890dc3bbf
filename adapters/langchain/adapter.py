"""The LangChain adapter object: version check, patch, exact unpatch.

Importing this module does not import LangChain (the plugin host loads every
adapter at kernel start); the framework is imported when ``aios.patch("langchain")``
is called, after the installed version was checked against ``supported``.
"""

from __future__ import annotations

import threading
from typing import Any

from aios.adapters.shared.route import Route, RouteOptions
from aios_core.components import Adapter
from aios_core.patching import Patcher


class LangChainAdapter(Adapter):
    name = "langchain"
    distribution = "langchain-core"
    supported = ">=1.0,<2"
    description = "langchain-core 1.x (and LangGraph on it): chat models and tools through the kernel"

    def __init__(self) -> None:
        self._patcher: Patcher | None = None
        self.route: Route | None = None
        self._lock = threading.Lock()

    @property
    def patched(self) -> bool:
        return self._patcher is not None

    def patch(self, kernel: Any, **agent_options: Any) -> None:
        with self._lock:
            if self._patcher is not None:
                return
            options = RouteOptions.parse(self.name, agent_options)
            from aios.adapters.langchain import calls, chat_models, tools

            route = Route(kernel, self.name, options)
            patcher = Patcher()
            try:
                chat_models.install(patcher, route)
                calls.install(patcher)
                tools.install(patcher, route)
            except BaseException:
                patcher.restore()
                raise
            self._patcher, self.route = patcher, route

    def unpatch(self) -> None:
        with self._lock:
            if self._patcher is None:
                return
            self._patcher.restore()
            self._patcher, self.route = None, None


#: the process's LangChain adapter (framework classes are process-wide, so is their patch state)
ADAPTER = LangChainAdapter()
