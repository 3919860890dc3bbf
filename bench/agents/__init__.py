"""Benchmark agents, one per framework, written the way that framework's users write agents."""

from __future__ import annotations

import importlib

from bench.agents.base import Framework, FrameworkUnavailable

#: --framework name -> "module:class"
FRAMEWORKS = {
    "sdk": "bench.agents.sdk:SDKFramework",
    "langchain": "bench.agents.langchain_agent:LangChainFramework",
    "autogen": "bench.agents.autogen_agent:AutoGenFramework",
    "metagpt": "bench.agents.metagpt_agent:MetaGPTFramework",
    "open-interpreter": "bench.agents.interpreter_agent:InterpreterFramework",
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
