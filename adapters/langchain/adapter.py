"""The LangChain adapter object: version check, patch, exact unpatch.

Importing this module does not import LangChain (the plugin host loads every
adapter at kernel start); the framework is imported when ``aios.patch("langchain")``
is called, after the installed version was checked against ``supported``.
"""

from __future__ import annotations

from aios.adapters.shared.adapter import RoutedAdapter
from aios.adapters.shared.route import Route

from aios_core.patching import Patcher


class LangChainAdapter(RoutedAdapter):
    name = "langchain"
    distribution = "langchain-core"
    supported = ">=1.0,<2"
    description = "langchain-core 1.x (and LangGraph on it): chat models and tools through the kernel"

    def install(self, patcher: Patcher, route: Route) -> None:
        from aios.adapters.langchain import calls, chat_models, tools

        chat_models.install(patcher, route)
        calls.install(patcher)
        tools.install(patcher, route)


#: the process's LangChain adapter (framework classes are process-wide, so is their patch state)
ADAPTER = LangChainAdapter()
