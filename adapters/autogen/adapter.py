"""The AutoGen adapter object: version check, patch, exact unpatch.

Importing this module does not import AutoGen (the plugin host loads every
adapter at kernel start); the framework is imported when ``aios.patch("autogen")``
is called, after the installed version was checked against ``supported``.
"""

from __future__ import annotations

from aios.adapters.shared.adapter import RoutedAdapter
from aios.adapters.shared.route import Route, RouteOptions

from aios_core.patching import Patcher, check_version
from aios_core.port import KernelPort


class AutoGenAdapter(RoutedAdapter):
    name = "autogen"
    distribution = "autogen-agentchat"
    supported = ">=0.7,<0.8"
    description = "AutoGen AgentChat/Core/Ext 0.7: model clients, tools, agents and teams through the kernel"

    def prepare(self, patcher: Patcher, kernel: KernelPort, options: RouteOptions) -> None:
        check_version("autogen-core", self.supported, self.name)

    def install(self, patcher: Patcher, route: Route) -> None:
        from aios.adapters.autogen import agents, model_clients, tools

        model_clients.install(patcher, route)
        tools.install(patcher, route)
        agents.install(patcher, route)


#: the process's AutoGen adapter (framework classes are process-wide, so is their patch state)
ADAPTER = AutoGenAdapter()
