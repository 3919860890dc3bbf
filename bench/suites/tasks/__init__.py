"""Task suites: loaders, episodes and checkers for HumanEval, MINT, GAIA and SWE-Bench-Lite."""

from __future__ import annotations

import importlib

from aios.bench.suites.tasks.base import Suite, TaskSetError

#: suite name -> "module:class"
SUITES = {
    "humaneval": "aios.bench.suites.tasks.humaneval:HumanEval",
    "mint": "aios.bench.suites.tasks.mint:MINT",
    "gaia": "aios.bench.suites.tasks.gaia:GAIA",
    "swebench": "aios.bench.suites.tasks.swebench:SWEBenchLite",
}


def get_suite(name: str) -> Suite:
    target = SUITES.get(name)
    if target is None:
        raise TaskSetError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)()  # type: ignore[no-any-return]
