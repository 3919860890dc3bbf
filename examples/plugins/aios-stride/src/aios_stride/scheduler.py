"""Stride scheduling: proportional share of the model among programs, by tickets.

Each program has a *pass*: the service it has received (tokens, as the kernel
meters them) divided by its tickets. The waiting job whose program has the
lowest pass runs next, so while several programs are backlogged each one's
share of generated tokens converges to its share of the tickets. A running job
that has used ``quantum`` tokens of its slice yields to a waiting program whose
pass is lower than its own; the kernel snapshots it and resumes it later.

A program that arrives (or comes back after being idle) starts at the current
*virtual time*, the pass of the latest program dispatched, so idleness earns
no credit that it could later spend starving the others. Within one program
jobs run in arrival order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from aios_core.errors import ConfigError
from aios_core.scheduler.base import Job, Scheduler


class StrideScheduler(Scheduler):
    name = "stride"
    description = (
        "proportional share by program tickets (stride scheduling); preempts after `quantum` tokens for a program behind its share"
    )

    def __init__(
        self,
        *,
        tickets: Mapping[str, int] | None = None,
        default_tickets: int = 100,
        quantum: int = 32,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        tickets = dict(tickets or {})
        for program, count in tickets.items():
            if not isinstance(count, int) or count < 1:
                raise ConfigError(f"scheduler_options.tickets.{program}: tickets must be a positive integer, got {count!r}")
        if not isinstance(default_tickets, int) or default_tickets < 1:
            raise ConfigError(f"scheduler_options.default_tickets: must be a positive integer, got {default_tickets!r}")
        if not isinstance(quantum, int) or quantum < 1:
            raise ConfigError(f"scheduler_options.quantum: must be a positive number of tokens, got {quantum!r}")
        self.tickets = tickets
        self.default_tickets = default_tickets
        self.quantum = quantum
        self._waiting: dict[str, deque[Job]] = {}
        self._pass: dict[str, float] = {}
        self._vtime = 0.0
        self._size = 0

    # ------------------------------------------------------------------ shares

    def tickets_of(self, program: str) -> int:
        return self.tickets.get(program, self.default_tickets)

    def pass_of(self, program: str) -> float:
        return self._pass.get(program, self._vtime)

    def _charge(self, program: str, service: float) -> None:
        self._pass[program] = self.pass_of(program) + service / self.tickets_of(program)

    def on_prefill(self, job: Job, prompt_tokens: int) -> None:
        super().on_prefill(job, prompt_tokens)
        self._charge(job.program, self.prefill_weight * prompt_tokens)

    def on_tokens(self, job: Job, n: int) -> None:
        super().on_tokens(job, n)
        self._charge(job.program, n)

    # ------------------------------------------------------------------ queue

    def push(self, job: Job, now: float) -> None:
        queue = self._waiting.get(job.program)
        if queue is None:
            queue = self._waiting[job.program] = deque()
            # (re)joining: no credit for the time spent idle
            self._pass[job.program] = max(self.pass_of(job.program), self._vtime)
            self._forget_idle()
        if job.preemptions:
            queue.appendleft(job)  # a preempted job resumes before its program's later arrivals
        else:
            queue.append(job)
        self._size += 1

    def _best(self) -> str | None:
        best: tuple[float, int, str] | None = None
        for program, queue in self._waiting.items():
            key = (self._pass[program], queue[0].seq, program)
            if best is None or key < best:
                best = key
        return None if best is None else best[2]

    def peek(self, now: float) -> Job | None:
        program = self._best()
        return None if program is None else self._waiting[program][0]

    def pop(self, now: float) -> Job | None:
        program = self._best()
        if program is None:
            return None
        queue = self._waiting[program]
        job = queue.popleft()
        if not queue:
            del self._waiting[program]
        self._size -= 1
        self._vtime = max(self._vtime, self._pass[program])
        return job

    def remove(self, job: Job) -> bool:
        queue = self._waiting.get(job.program)
        if queue is None or job not in queue:
            return False
        queue.remove(job)
        if not queue:
            del self._waiting[job.program]
        self._size -= 1
        return True

    def __len__(self) -> int:
        return self._size

    # ------------------------------------------------------------------ preemption

    def should_preempt(self, running: Job, now: float) -> bool:
        if running.slice_tokens < self.quantum:
            return False
        best = self._best()
        return best is not None and self._pass[best] < self.pass_of(running.program)

    def victim_rank(self, running: Job, now: float) -> tuple[float, ...]:
        # the program furthest ahead of its share yields first
        return (self.pass_of(running.program), running.slice_tokens)

    # ------------------------------------------------------------------ bounded memory

    def forget_program(self, program: str) -> None:
        super().forget_program(program)
        if program not in self._waiting:
            self._pass.pop(program, None)

    def _forget_idle(self) -> None:
        # a program with nothing waiting and no lead over virtual time is indistinguishable from a new one
        if len(self._pass) <= self.max_programs:
            return
        for program in [p for p, value in self._pass.items() if p not in self._waiting and value <= self._vtime]:
            del self._pass[program]

    def snapshot_state(self) -> dict[str, Any]:
        state = super().snapshot_state()
        state["virtual_time"] = round(self._vtime, 3)
        state["waiting_programs"] = {
            p: {"tickets": self.tickets_of(p), "pass": round(self._pass[p], 3), "jobs": len(q)} for p, q in self._waiting.items()
        }
        return state
