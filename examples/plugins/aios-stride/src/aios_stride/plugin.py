"""The module the ``aios`` entry point names."""

from __future__ import annotations

from aios_core.hookspecs import hookimpl
from aios_core.scheduler.base import Scheduler
from aios_stride.scheduler import StrideScheduler


@hookimpl
def aios_register_schedulers() -> list[type[Scheduler]]:
    return [StrideScheduler]
