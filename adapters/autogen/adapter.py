"""The AutoGen adapter object: version check, patch, exact unpatch.

Importing this module does not import AutoGen (the plugin host loads every
adapter at kernel start); the framework is imported when ``aios.patch("autogen")``
is called, after the installed version was checked against ``supported``.
"""

from __future__ import annotations

import threading
from typing import Any

from aios.adapters.shared.route import Route, RouteOptions
from aios_core.components import Adapter
from aios_core.patching import Patcher, check_version


class AutoGenAdapter(Adapter):
    name = "autogen"
    distribution = "autogen-agentchat"
    supported = ">=0.7,<0.8"
    description = "AutoGen AgentChat/Core/Ext 0.7: model clients, tools, agents and teams through the kernel"

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
            check_version("autogen-core", self.supported, self.name)
            from aios.adapters.autogen import agents, model_clients, tools

            route = Route(kernel, self.name, options)
            patcher = Patcher()
            try:
                model_clients.install(patcher, route)
                tools.install(patcher, route)
                agents.install(patcher, route)
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


#: the process's AutoGen adapter (framework classes are process-wide, so is their patch state)
ADAPTER = AutoGenAdapter()
