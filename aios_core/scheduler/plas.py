"""PLAS: program-level scheduling (Autellix, arXiv 2502.13965), by a Gittins index of attained service by default.

An agent's calls form a program. A call is ranked by the service its whole
program has attained so far (tokens, see :class:`Scheduler`), not by the call
alone, so a short program is not stuck behind the many calls of a long one.
Service is discretised into geometric levels (a multi-level feedback queue):
a job whose program crosses a threshold drops a level, and a running job
yields (after ``min_slice`` tokens) when a job of a lower level waits.

Within a level, jobs are served in the order their *programs* arrived, not in
the order the calls were queued (program-level FCFS, as in Autellix). This is
what keeps the tail in check: with call-level order, a long program's every
call goes to the back of its level and the oldest long programs are served
last of all, so least-attained-service alone finishes the longest programs far
later than FIFO does. Few levels (``levels=4``: under 64, 128, 256 tokens and
the rest) keep the long programs together in the last level, where they finish
in arrival order. On the study's heavy-tailed trace (``python -m aios.bench.studies.schedulers``)
with 12 levels or call-level order, PLAS wins the mean but loses the p99; how
much it gains over FIFO with the calibrated costs, per workload family and
seed, is in docs/benchmarks.md (the levels lose where programs are alike).

Least-attained-service alone starves long programs while short ones keep
arriving. A call whose program has waited more than ``starvation_ratio`` times
the time it ran (default 200), or, if set, that has itself waited more than
``max_wait`` seconds, is starving: it is served before every level (oldest
program first) and may preempt. The ratio scales with the load; a fixed
``max_wait`` bounds waits in seconds, but once the kernel is overloaded so far
that most calls wait that long, every call starves and PLAS becomes FIFO (on
the study's trace at 1000 agents, ``max_wait=120`` gave no gain over FIFO).
Autellix uses 50; under sustained overload that turns the Gittins order below
into FIFO too: on the study's replayed MINT/GAIA agents the mean completion
was 1.3x longer than at 200, and no family's tail gained from it.

The default ``rank="gittins"`` orders programs by the Gittins index of their
attained service under the sizes of the programs seen so far, ended and still
running (:mod:`aios_core.scheduler.gittins`), once ``gittins_min_samples`` have
ended, and by the levels until then: least attained service where programs are
heavy-tailed, first come first served where they are alike, where plain LAS
(``rank="levels"``) shares the engine among all of them and finishes every one
late. Per workload family and seed, the two ranks against an engine with its
own prefix cache are in docs/benchmarks.md ("Scheduler study on the sim core").

Programs of one application (the same system prompt and tools, see
``LLMRequest.application``) run to alike sizes, and applications differ: a
chat and a coding agent. With ``rank_by_application`` (the default) an
application with ``application_min_samples`` ended programs is ranked under
its own sizes, the others under everyone's; the indices compare across
applications (the multi-class Gittins policy). On the replayed MINT/GAIA
agents this shortened the mean completion 1.10x; where every application has
the same sizes (the study's pareto family) it changes nothing but noise.

Under the Gittins rank PLAS also does load control (:mod:`aios_core.scheduler.working_set`)
when the pool's engines say how many KV cells they keep conversations in (the
sim core with its prefix cache; an ``openai`` core given ``kv_cells``). A
program that has not started waits while the conversations of the programs in
flight, plus the one its application is expected to grow, would exceed
``kv_share`` of those cells (default 0.4: the running sequences need the rest
to grow their answers). Programs in flight never wait for it, nor programs of
an application whose conversations are small (``small_share`` of the budget)
or whose calls do not carry their conversation, nor any program while nothing
runs, nor for longer than ``max_hold`` seconds. A program between calls
counts for ``resident_ttl`` seconds after its last call (an OpenAI client
never says that its program ended). Without it,
while few programs had ended the rank shared the engine among every long
coding program of the study's bimodal family at once; their conversations no
longer fitted, each call prefilled its whole conversation again, and every
sequence of the batch waited for that prefill (docs/benchmarks.md, "Load
control"). ``kv_share=None`` turns it off.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict, defaultdict

from aios_core.scheduler.base import Job, ProgramStats, Scheduler
from aios_core.scheduler.gittins import GittinsIndex
from aios_core.scheduler.queues import FifoQueue, KeyedHeap
from aios_core.scheduler.working_set import WorkingSet

RANKS = ("levels", "gittins")


class PLASScheduler(Scheduler):
    name = "plas"
    description = "program-level scheduling (Autellix) by the Gittins index of attained service; the default"

    def __init__(
        self,
        *,
        base: float = 64.0,
        levels: int = 4,
        min_slice: int = 16,
        starvation_ratio: float | None = 200.0,
        min_service: float = 1.0,
        max_wait: float | None = None,
        scan: int = 64,
        rank: str = "gittins",
        gittins_window: int = 1000,
        gittins_min_samples: int = 5,
        preempt_ratio: float = 2.0,
        rank_by_application: bool = True,
        application_min_samples: int = 20,
        max_applications: int = 64,
        kv_share: float | None = 0.4,
        small_share: float = 1 / 16,
        resident_ttl: float = 30.0,
        max_hold: float | None = 1200.0,
        **options: float,
    ) -> None:
        super().__init__(**options)
        if base <= 0 or levels < 1:
            raise ValueError("base must be > 0 and levels >= 1")
        if max_applications < 1 or application_min_samples < 1:
            raise ValueError(f"max_applications and application_min_samples must be >= 1, got {max_applications!r} and {application_min_samples!r}")
        if rank not in RANKS:
            raise ValueError(f"rank must be one of {', '.join(RANKS)}, got {rank!r}")
        if preempt_ratio < 1:
            raise ValueError("preempt_ratio must be >= 1")
        if not resident_ttl > 0:
            raise ValueError(f"resident_ttl must be > 0 seconds, got {resident_ttl!r}")
        if max_hold is not None and not max_hold > 0:
            raise ValueError(f"max_hold must be > 0 seconds or None, got {max_hold!r}")
        self.rank = rank
        self.preempt_ratio = float(preempt_ratio)
        self.gittins = GittinsIndex(window=gittins_window, min_samples=gittins_min_samples) if rank == "gittins" else None
        # one more estimate per application (most recently ended last), used once it has its own min_samples
        self.rank_by_application = bool(rank_by_application)
        self.max_applications = int(max_applications)
        self.application_min_samples = int(application_min_samples)
        self._applications: OrderedDict[str, GittinsIndex] = OrderedDict()
        # every queued job, keyed by (minus its program's Gittins index, program arrival, queueing order)
        self._by_index = KeyedHeap()
        self._index_key: dict[str, tuple[float, float, int]] = {}
        # programs ended since the estimates were last told which programs still run: the estimates and every
        # queued job's index may have moved (samples change only here), so the next peek tells and re-ranks
        self._ended_since_ranked = False
        # load control (module docstring): new programs held while the conversations in flight fill the KV budget
        self.working_set = WorkingSet(share=kv_share, small_share=small_share, max_applications=max_applications)
        self.resident_ttl = float(resident_ttl)
        self.max_hold = max_hold
        # jobs of new programs that wait for room, keyed as in _by_index; back in _by_index once they fit
        self._held = KeyedHeap()
        # programs with a call queued or running, the jobs on a core now, and the programs among them that
        # started and have not been prefilled yet (they count at their expected footprint)
        self._live: dict[str, ProgramStats] = {}
        self._dispatched: set[str] = set()
        self._starting: set[str] = set()
        self._in_flight_memo: tuple[float, float] | None = None
        self.base = float(base)
        self.levels = int(levels)
        self.min_slice = int(min_slice)
        self.starvation_ratio = starvation_ratio
        self.min_service = min_service
        self.max_wait = max_wait
        self.scan = scan
        # each level: jobs keyed by (their program's first arrival, queueing order)
        self._queues = [KeyedHeap() for _ in range(self.levels)]
        self._level_of: dict[str, int] = {}
        self._all = FifoQueue()  # arrival order across levels, for the starvation guard

    def level(self, program: str) -> int:
        attained = self.attained(program)
        if attained < self.base:
            return 0
        return min(self.levels - 1, 1 + int(math.log2(attained / self.base)))

    def _key(self, job: Job) -> tuple[float, int]:
        return (self.program_arrival(job), job.seq)

    def _by_gittins(self) -> bool:
        return self.gittins is not None and self.gittins.ready

    def index(self, program: str) -> float:
        """The program's Gittins index (higher: served first); 0 when ranking by levels."""
        if self.gittins is None:
            return 0.0
        stats = self._programs.get(program)
        return self.estimate_for(stats).index(stats.attained if stats is not None else 0.0)

    def estimate_for(self, stats: ProgramStats | None) -> GittinsIndex:
        """The size distribution a program is ranked under: its application's once enough of them have
        ended, else that of every program. Indices from either are completions per unit of service, so
        programs ranked under different ones compare (the multi-class Gittins policy)."""
        if stats is not None and stats.application is not None:
            own = self._applications.get(stats.application)
            if own is not None and own.ready:
                return own
        assert self.gittins is not None
        return self.gittins

    def _application_estimate(self, application: str) -> GittinsIndex:
        assert self.gittins is not None
        estimate = self._applications.get(application)
        if estimate is None:
            estimate = self._applications[application] = GittinsIndex(window=self.gittins.window, min_samples=self.application_min_samples)
            if len(self._applications) > self.max_applications:
                self._applications.popitem(last=False)
        self._applications.move_to_end(application)
        return estimate

    def _gittins_key(self, job: Job) -> tuple[float, float, int]:
        return (-self.index(job.program), self.program_arrival(job), job.seq)

    def push(self, job: Job, now: float) -> None:
        lvl = self.level(job.program)
        self._queues[lvl].push(job, self._key(job))
        self._level_of[job.id] = lvl
        self._all.push(job)
        if self.gittins is not None:
            key = self._gittins_key(job)
            self._by_index.push(job, key)
            self._index_key[job.id] = key

    def forget_program(self, program: str) -> None:
        stats = self._programs.get(program)
        ended = self.gittins is not None and stats is not None and stats.live == 0
        super().forget_program(program)
        self._live.pop(program, None)
        self._starting.discard(program)
        self._in_flight_memo = None
        if stats is not None and stats.context > 0:
            self.working_set.ended(stats.application, stats.context)
        if ended:
            self.gittins.observe(stats.attained)  # an ended program is a sample of the size distribution
            if self.rank_by_application and stats.application is not None:
                self._application_estimate(stats.application).observe(stats.attained)
            self._ended_since_ranked = True

    # ------------------------------------------------------------------ load control (see working_set)

    def set_kv_cells(self, cells: int | None) -> None:
        self.working_set.set_cells(cells)

    def is_held(self, job: Job) -> bool:
        return job in self._held

    def on_arrival(self, job: Job) -> None:
        super().on_arrival(job)
        self._live[job.program] = self._programs[job.program]

    def on_finish(self, job: Job) -> None:
        super().on_finish(job)
        self._dispatched.discard(job.id)
        stats = self._programs.get(job.program)
        if stats is not None and stats.live == 0:
            self._live.pop(job.program, None)
            self._starting.discard(job.program)
        self._in_flight_memo = None

    def on_dispatch(self, job: Job, now: float) -> None:
        super().on_dispatch(job, now)
        self._dispatched.add(job.id)
        stats = self._programs.get(job.program)
        if stats is not None and stats.context == 0:
            self._starting.add(job.program)
        self._in_flight_memo = None

    def on_release(self, job: Job, now: float) -> None:
        super().on_release(job, now)
        self._dispatched.discard(job.id)

    def on_prefill(self, job: Job, prompt_tokens: int) -> None:
        before = self._programs.get(job.program)
        if before is not None and before.context > 0 and job.generated == 0:
            # a follow-up call: a prefix cache helps it only if its prompt carries the conversation so far
            self.working_set.followed_up(before.application, carried=prompt_tokens >= before.context)
        super().on_prefill(job, prompt_tokens)
        stats = self._programs[job.program]
        self.working_set.grew(stats.application, stats.context)
        self._starting.discard(job.program)
        self._in_flight_memo = None

    def on_tokens(self, job: Job, n: int) -> None:
        super().on_tokens(job, n)
        stats = self._programs.get(job.program)
        if stats is not None:
            self.working_set.grew(stats.application, stats.context)

    def in_flight_context(self, now: float) -> float:
        """Tokens of conversation kept for the programs in flight: those with a call queued or running, and
        those between calls (waiting for a tool) for ``resident_ttl`` seconds since their last call began or ended.
        A program that has just started counts at its application's expected footprint until its prompt is known."""
        memo = self._in_flight_memo
        if memo is not None and memo[0] == now:
            return memo[1]
        keeps = self.working_set.keeps
        total = float(sum(stats.context for stats in self._live.values() if keeps(stats.application)))
        for program in self._starting:
            stats = self._programs.get(program)
            if stats is not None:
                total += self.working_set.footprint(stats.application)[0]
        cutoff = now - self.resident_ttl
        for stats in reversed(self._programs.values()):  # most recently active first
            if stats.last_active < cutoff:
                break
            if stats.live == 0 and keeps(stats.application):
                total += stats.context
        self._in_flight_memo = (now, total)
        return total

    def holds(self, job: Job, now: float) -> bool:
        """Whether ``job`` waits for room: its program has not started and its conversation would not fit.

        Never while nothing runs (load control must not idle the engine), nor once it has waited ``max_hold``
        seconds (conversations that never end, or an agent that keeps one in flight on purpose, must not hold
        everyone else back for ever).
        """
        if not self.working_set.active or not self._dispatched:
            return False
        if self.max_hold is not None and now - job.enqueued_at > self.max_hold:
            return False
        stats = self._programs.get(job.program)
        if stats is not None and stats.context > 0:
            return False
        application = stats.application if stats is not None else job.application
        return not self.working_set.admits(application, self.in_flight_context(now))

    def _release_held(self, now: float) -> None:
        # the best held job goes back once it fits (others of its kind follow in rank order)
        while True:
            job = self._held.peek()
            if job is None or self.holds(job, now):
                return
            self._held.remove(job)
            self._by_index.push(job, self._index_key[job.id])

    def is_starving(self, job: Job, now: float) -> bool:
        if self.max_wait is not None and now - job.enqueued_at > self.max_wait:
            return True
        if self.starvation_ratio is None:
            return False
        stats = self._programs.get(job.program)
        if stats is None:
            return False
        waited = stats.wait_s + max(0.0, now - job.enqueued_at)
        return waited > self.starvation_ratio * max(stats.service_s, self.min_service)

    def _starving(self, now: float) -> Job | None:
        # the longest-waiting calls are the candidates (a bounded prefix keeps peek O(scan)); of those that
        # starve, the one of the oldest program goes first, as within a level
        best: Job | None = None
        best_key: tuple[float, int] | None = None
        for i, job in enumerate(self._all):
            if i >= self.scan:
                break
            if self.is_starving(job, now) and not self.holds(job, now):
                key = self._key(job)
                if best_key is None or key < best_key:
                    best, best_key = job, key
        return best

    def peek(self, now: float) -> Job | None:
        starving = self._starving(now)
        if starving is not None:
            return starving
        if self._by_gittins():
            if self._ended_since_ranked:
                self._tell_running()
                self._rerank()
            if self._held:
                self._release_held(now)
            while True:
                job = self._by_index.peek()
                if job is None:
                    return None
                key = self._gittins_key(job)
                if key == self._index_key[job.id]:
                    if not self.holds(job, now):
                        return job
                    self._by_index.remove(job)
                    self._held.push(job, key)
                    continue
                # its program gained service while it waited (parallel calls): re-rank lazily
                self._by_index.push(job, key)
                self._index_key[job.id] = key
        for lvl, queue in enumerate(self._queues):
            while True:
                job = queue.peek()
                if job is None:
                    break
                actual = self.level(job.program)
                if actual == lvl:
                    return job
                # its program gained service while it waited (parallel calls): demote lazily
                queue.remove(job)
                self._queues[actual].push(job, self._key(job))
                self._level_of[job.id] = actual
        return None

    def _tell_running(self) -> None:
        # the programs still running are samples too, of sizes at least what they have had (most recent
        # first), each of its own application's as well; told once per batch of ended programs, not once per program
        assert self.gittins is not None
        running = list(itertools.islice(reversed(self._programs.values()), self.gittins.window))
        self.gittins.set_running(p.attained for p in running)
        if self._applications:
            by_application: defaultdict[str | None, list[float]] = defaultdict(list)
            for p in running:
                by_application[p.application].append(p.attained)
            for application, estimate in self._applications.items():
                estimate.set_running(by_application.get(application, ()))
        self._ended_since_ranked = False

    def _rerank(self) -> None:
        # the estimate changed (a program ended): every queued job's index may have moved, not only the top's
        heap = KeyedHeap()
        for job in self._all:
            key = self._gittins_key(job)
            heap.push(job, key)
            self._index_key[job.id] = key
        self._by_index = heap
        self._held = KeyedHeap()  # held jobs are back in line: the next peek holds those that still do not fit

    def pop(self, now: float) -> Job | None:
        job = self.peek(now)
        if job is not None:
            self.remove(job)
        return job

    def remove(self, job: Job) -> bool:
        lvl = self._level_of.pop(job.id, None)
        if lvl is None:
            return False
        self._queues[lvl].remove(job)
        self._all.remove(job)
        if self._index_key.pop(job.id, None) is not None:
            self._by_index.remove(job)
            self._held.remove(job)
        return True

    def __len__(self) -> int:
        return len(self._level_of)

    def should_preempt(self, running: Job, now: float) -> bool:
        if running.slice_tokens < self.min_slice:
            return False
        best = self.peek(now)
        if best is None:
            return False
        if self._by_gittins():
            if self.is_starving(best, now):
                # starving calls go first at dispatch; under overload most calls starve, and letting each
                # preempt would churn the batch without serving anyone sooner
                return False
            # only a clearly better program preempts: indices of alike programs differ a little, and swapping
            # them back and forth would share the engine among all of them, the very thing Gittins avoids
            return self.index(best.program) > self.preempt_ratio * self.index(running.program)
        if self.is_starving(best, now):
            return not self.is_starving(running, now)
        return self.level(best.program) < self.level(running.program)

    def victim_rank(self, running: Job, now: float) -> tuple[float, ...]:
        if self._by_gittins():
            return (-self.index(running.program), self.attained(running.program))
        # evict the program that has had the most service: the essence of least-attained-service
        return (self.level(running.program), self.attained(running.program))
