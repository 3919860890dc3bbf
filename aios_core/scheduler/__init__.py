"""Scheduling policies (pure, model-free) and the job record they order."""

from aios_core.scheduler.base import Job, ProgramStats, Scheduler
from aios_core.scheduler.fifo import FifoScheduler
from aios_core.scheduler.plas import PLASScheduler
from aios_core.scheduler.priority import PriorityScheduler
from aios_core.scheduler.round_robin import RoundRobinScheduler
from aios_core.scheduler.srpt import SRPTScheduler

BUILTIN_SCHEDULERS: tuple[type[Scheduler], ...] = (
    FifoScheduler,
    RoundRobinScheduler,
    PriorityScheduler,
    PLASScheduler,
    SRPTScheduler,
)

__all__ = [
    "BUILTIN_SCHEDULERS",
    "FifoScheduler",
    "Job",
    "PLASScheduler",
    "PriorityScheduler",
    "ProgramStats",
    "RoundRobinScheduler",
    "SRPTScheduler",
    "Scheduler",
]
