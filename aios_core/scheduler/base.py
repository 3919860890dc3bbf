"""A scheduler is a pure policy over a queue of LLM jobs.

It never touches a core or a clock of its own: the kernel tells it what arrived
(:meth:`Scheduler.push`), asks it what runs next (:meth:`Scheduler.pop`), reports
progress (:meth:`Scheduler.on_tokens`) and, at token boundaries of a running
job while others wait, asks whether to preempt it
(:meth:`Scheduler.should_preempt`). That keeps every policy unit-testable
without a model, as in vLLM's and SGLang's schedulers.

Service is metered in tokens: decoded tokens plus prompt tokens weighted by
``prefill_weight`` (prefill costs far less per token than decode). Per-program
attained service lives here so that program-level policies (PLAS) can use it.
"""

from __future__ import annotations

import abc
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

_seq = itertools.count()


@dataclass(eq=False, slots=True)
class Job:
    """A schedulable LLM syscall (it may be preempted and queued again)."""

    id: str
    agent: str
    program: str
    priority: int = 0
    #: loop time of the first arrival, and of the latest (re)queueing
    arrival: float = 0.0
    enqueued_at: float = 0.0
    prompt_tokens: int = 0
    generated: int = 0
    #: tokens generated since this job was last dispatched (the current time slice)
    slice_tokens: int = 0
    #: caller's estimate of tokens still to generate (SRPT); None when unknown
    hint_tokens: int | None = None
    #: the application the program belongs to (see ``LLMRequest.application``); None when unknown
    application: str | None = None
    preemptions: int = 0
    #: loop time of the latest dispatch to a core
    dispatched_at: float | None = None
    #: loop time it ended (set by the pool just before :meth:`Scheduler.on_finish`)
    ended_at: float | None = None
    seq: int = field(default_factory=lambda: next(_seq))
    #: anything the kernel wants to carry along (never read by policies)
    payload: Any = None


@dataclass(slots=True)
class ProgramStats:
    #: service in tokens (decode + weighted prefill)
    attained: float = 0.0
    calls: int = 0
    live: int = 0
    #: seconds the program's calls spent queued, and running on a core
    wait_s: float = 0.0
    service_s: float = 0.0
    #: loop time of the program's first call (program-level FCFS orders by it)
    first_arrival: float | None = None
    #: loop time of its latest arrival or end of a call (an idle program starts over, see ``program_idle``)
    last_active: float = 0.0
    #: the application of its latest call that named one
    application: str | None = None
    #: tokens of its conversation as of its latest call (prompt, then each token generated): what a prefix cache
    #: keeps for its next call; 0 until a call of it has been prefilled
    context: int = 0


class Scheduler(abc.ABC):
    """Base class of all policies. Subclasses keep their own queue structure."""

    name: ClassVar[str] = "base"
    #: one-line description for ``aios plugins`` and the docs
    description: ClassVar[str] = ""

    def __init__(self, *, prefill_weight: float = 0.05, max_programs: int = 100_000, program_idle: float | None = 120.0) -> None:
        """``program_idle``: seconds after which a program with no call in flight has ended: its next call starts
        a new program (an OpenAI client never says that its program ended; an agent that ran long an hour ago
        must not stay last in line for ever). None: programs end only with their agent."""
        if program_idle is not None and program_idle <= 0:
            raise ValueError(f"program_idle must be > 0 seconds or None, got {program_idle!r}")
        self.prefill_weight = prefill_weight
        self.max_programs = max_programs
        self.program_idle = program_idle
        self._programs: OrderedDict[str, ProgramStats] = OrderedDict()

    # ------------------------------------------------------------------ queue (policy)

    @abc.abstractmethod
    def push(self, job: Job, now: float) -> None:
        """Queue ``job`` (new, or preempted and coming back)."""

    @abc.abstractmethod
    def pop(self, now: float) -> Job | None:
        """Remove and return the job to run next, or None if the queue is empty."""

    @abc.abstractmethod
    def peek(self, now: float) -> Job | None:
        """The job :meth:`pop` would return, without removing it."""

    @abc.abstractmethod
    def remove(self, job: Job) -> bool:
        """Take ``job`` out of the queue (it was cancelled); False if it was not queued."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    def should_preempt(self, running: Job, now: float) -> bool:
        """Whether ``running`` should yield its slot to the best waiting job (only asked when one waits)."""
        return False

    def is_starving(self, job: Job, now: float) -> bool:
        """Whether the waiting ``job`` has waited longer than this policy allows (PLAS's starvation guard).

        The pool then lets room held for other programs' next turns go to it at once, rather than after
        the held room's own bound: a wait the policy bounds is bounded against held room too.
        """
        return False

    def victim_rank(self, running: Job, now: float) -> tuple[float, ...]:
        """How much ``running`` deserves to be the one preempted (higher first).

        When a waiting job may preempt, the kernel preempts only the running
        job with the highest rank, one per waiting job, so a single arrival
        never evicts a whole batch.
        """
        return (running.slice_tokens,)

    # ------------------------------------------------------------------ accounting (shared)

    def program(self, name: str) -> ProgramStats:
        """``name``'s stats, made on first sight. Reading them does not reorder programs (see :meth:`_end_idle`)."""
        stats = self._programs.get(name)
        if stats is None:
            stats = self._programs[name] = ProgramStats()
            self._trim()
        return stats

    def attained(self, program: str) -> float:
        stats = self._programs.get(program)
        return stats.attained if stats else 0.0

    def on_arrival(self, job: Job) -> None:
        # an idle program coming back after program_idle is ended here, before it counts the new call
        self._end_idle(job.arrival)
        stats = self.program(job.program)
        stats.calls += 1
        stats.live += 1
        if job.application is not None:
            stats.application = job.application
        self._touch(job.program, stats, job.arrival)
        if stats.first_arrival is None:
            stats.first_arrival = job.arrival

    def program_arrival(self, job: Job) -> float:
        """When ``job``'s program made its first call (the job's own arrival if the program is unknown)."""
        stats = self._programs.get(job.program)
        return stats.first_arrival if stats is not None and stats.first_arrival is not None else job.arrival

    def on_dispatch(self, job: Job, now: float) -> None:
        job.slice_tokens = 0
        job.dispatched_at = now
        stats = self._programs.get(job.program)
        if stats is not None:
            stats.wait_s += max(0.0, now - job.enqueued_at)

    def on_release(self, job: Job, now: float) -> None:
        """``job`` left its core (finished, preempted or failed)."""
        stats = self._programs.get(job.program)
        if stats is not None and job.dispatched_at is not None:
            stats.service_s += max(0.0, now - job.dispatched_at)
        job.dispatched_at = None

    def on_prefill(self, job: Job, prompt_tokens: int) -> None:
        job.prompt_tokens = prompt_tokens
        stats = self.program(job.program)
        stats.attained += self.prefill_weight * prompt_tokens
        stats.context = prompt_tokens + job.generated

    def on_tokens(self, job: Job, n: int) -> None:
        job.generated += n
        job.slice_tokens += n
        if job.hint_tokens is not None:
            job.hint_tokens = max(0, job.hint_tokens - n)
        stats = self._programs.get(job.program)
        if stats is not None:
            stats.attained += n
            stats.context += n

    def on_finish(self, job: Job) -> None:
        stats = self._programs.get(job.program)
        if stats is not None:
            stats.live = max(0, stats.live - 1)
            if job.ended_at is not None:
                self._touch(job.program, stats, job.ended_at)

    def _touch(self, name: str, stats: ProgramStats, now: float) -> None:
        """``name`` was active at ``now``: programs stay in order of ``last_active``, oldest first, which
        :meth:`_end_idle` relies on. Only here do they move."""
        if now >= stats.last_active:
            stats.last_active = now
            self._programs.move_to_end(name)

    def is_held(self, job: Job) -> bool:
        """Whether queued ``job`` waits for room in the KV cache rather than for its turn (``aios ps`` shows it)."""
        return False

    def set_kv_cells(self, cells: int | None) -> None:
        """The KV cells the pool's engines keep conversations in between calls (None: unknown).

        Told once by the pool; policies that keep the conversations in flight within the cache use it.
        """

    def forget_program(self, program: str) -> None:
        """The program ended: drop its history (bounded memory for long-running kernels)."""
        self._programs.pop(program, None)

    def _end_idle(self, now: float) -> None:
        """Programs with no call in flight for ``program_idle`` seconds have ended, even if they never come back.

        An OpenAI client never says its program ended, and a policy that learns from ended programs (PLAS's
        Gittins rank) must hear of it. Programs are kept least recently active first, so this looks only at
        the front, past the few with a call still running; a program that comes back after ``program_idle``
        is among them.
        """
        if self.program_idle is None:
            return
        ended = []
        for name, stats in self._programs.items():
            if now - stats.last_active <= self.program_idle:
                break  # this one and every later one were active since
            if stats.live == 0:
                ended.append(name)
        for name in ended:
            self.forget_program(name)

    def _trim(self) -> None:
        # drop the least recently active programs with nothing in flight
        while len(self._programs) > self.max_programs:
            for name, stats in self._programs.items():
                if stats.live == 0:
                    del self._programs[name]
                    break
            else:
                return

    def snapshot_state(self) -> dict[str, Any]:
        """Queue contents for ``aios top`` / ``aios ps``."""
        return {"policy": self.name, "queued": len(self), "programs": len(self._programs)}
