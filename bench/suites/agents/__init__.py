"""Benchmark agents, one per framework, written the way that framework's users write agents."""

from __future__ import annotations

import importlib

from aios.bench.suites.agents.base import Framework, FrameworkUnavailable

#: --framework name -> "module:class"
FRAMEWORKS = {
    "sdk": "aios.bench.suites.agents.sdk:SDKFramework",
    "langchain": "aios.bench.suites.agents.langchain_agent:LangChainFramework",
    "autogen": "aios.bench.suites.agents.autogen_agent:AutoGenFramework",
    "metagpt": "aios.bench.suites.agents.metagpt_agent:MetaGPTFramework",
    "open-interpreter": "aios.bench.suites.agents.interpreter_agent:InterpreterFramework",
}


def get_framework(name: str) -> Framework:
    target = FRAMEWORKS.get(name)
    if target is None:
        raise FrameworkUnavailable(f"unknown framework {name!r}; choose one of {', '.join(FRAMEWORKS)}")
    module, _, cls = target.partition(":")
    try:
        framework = getattr(importlib.import_module(module), cls)()
    except ImportError as exc:
        raise FrameworkUnavailable(f"the {name} agent cannot be imported here: {exc}") from exc
    framework.check_available()
    return framework  # type: ignore[no-any-return]
