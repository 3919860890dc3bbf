"""Task suites: loaders, episodes and checkers for HumanEval, MINT, GAIA and SWE-Bench-Lite."""

from __future__ import annotations

import importlib

from bench.tasks.base import Suite, TaskSetError

#: suite name -> "module:class"
SUITES = {
    "humaneval": "bench.tasks.humaneval:HumanEval",
    "mint": "bench.tasks.mint:MINT",
    "gaia": "bench.tasks.gaia:GAIA",
    "swebench": "bench.tasks.swebench:SWEBenchLite",
}


def get_suite(name: str) -> Suite:
    target = SUITES.get(name)
    if target is None:
        raise TaskSetError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)()  # type: ignore[no-any-return]
