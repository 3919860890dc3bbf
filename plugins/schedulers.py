"""Built-in scheduling policies: fifo, rr, priority, plas (default) and srpt (oracle, for studies)."""

from __future__ import annotations

from aios_core.hookspecs import hookimpl
from aios_core.scheduler import BUILTIN_SCHEDULERS, Scheduler


@hookimpl
def aios_register_schedulers() -> list[type[Scheduler]]:
    return list(BUILTIN_SCHEDULERS)
