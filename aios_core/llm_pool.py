"""The LLM resource: one scheduler queue in front of the cores that serve one model.

Nothing here polls. A syscall is pushed to the scheduler and the pool fills
free core slots at once (:meth:`LLMPool._fill`); whenever a generation ends,
is preempted or fails, the pool fills again. Each running generation has one
task that reads its core's token stream, meters service for the scheduler and,
at token boundaries while others wait, asks the policy whether to preempt. A
preempted generation's snapshot goes to the context manager and the job goes
back into the queue; when it is picked again it resumes from the snapshot.

A generation whose core failed under it goes back into the policy's queue like
a preempted one, and continues on a healthy core (from the text already
streamed, where the core can). Serving such calls first, ahead of the policy,
was tried and gained nothing (docs/benchmarks.md, "A moved call first"): after
a failure the survivor's time goes to prefilling conversations it no longer
holds, which the order of the queue does not change.

A scheduling policy that raises is contained: the pool logs it, reports it
through ``on_scheduler_error`` and carries on with FIFO over the same queue.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Any

from aios_core.agents import AgentRecord, program_key
from aios_core.cores.base import Chunk, Finish, Generation, LLMCore, Snapshot
from aios_core.cores.engine_speed import ProgramMeans, route_cost
from aios_core.errors import AIOSError, CoreError, QueueFullError, SyscallCancelledError
from aios_core.managers.context import ContextManager
from aios_core.scheduler.base import Job, Scheduler
from aios_core.scheduler.fifo import FifoScheduler
from aios_core.syscalls import LLMResponse, LLMSyscall, StreamPiece, Usage
from aios_core.timeline import Timeline

log = logging.getLogger(__name__)


class FlightState(enum.StrEnum):
    """Where an LLM syscall is: QUEUED -> RUNNING -> (PREEMPTED -> RUNNING)* -> DONE (a ``StrEnum``: ``aios ps`` shows the words)."""

    QUEUED = "queued"
    #: queued, and a new program that the scheduler holds until its conversation fits in the KV cache (load control)
    HELD = "held"
    RUNNING = "running"
    #: paused with its snapshot kept; queued again until it resumes on the core that holds the snapshot
    PREEMPTED = "preempted"
    DONE = "done"


class Flight:
    """One LLM syscall inside the kernel, from queueing to its response."""

    __slots__ = (
        "syscall", "agent", "job", "done", "deltas", "parts", "core", "snapshot_core", "task",
        "prompt_tokens", "cached_tokens", "completion_tokens", "run_started", "attempts", "cancel_reason", "failed_on",
        "text_resume", "held_out_since",
    )

    def __init__(self, syscall: LLMSyscall, agent: AgentRecord, job: Job, *, stream: bool) -> None:
        self.syscall = syscall
        self.agent = agent
        self.job = job
        self.done: asyncio.Future[LLMResponse] = asyncio.get_running_loop().create_future()
        self.deltas: asyncio.Queue[StreamPiece | BaseException] | None = asyncio.Queue() if stream else None
        self.parts: list[str] = []
        self.core: LLMCore | None = None
        self.snapshot_core: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.completion_tokens = 0
        self.run_started = 0.0
        self.attempts = 0
        self.cancel_reason: AIOSError | None = None
        #: cores this flight failed on: a retry goes elsewhere when another core can take it
        self.failed_on: set[str] = set()
        #: the answer so far, when its core died mid-stream: it continues on a core that resumes from text
        self.text_resume: Snapshot | None = None
        #: when room held for other programs first kept this call out (it may do so for a bounded time only)
        self.held_out_since: float | None = None

    @property
    def id(self) -> str:
        return self.syscall.id

    @property
    def state(self) -> FlightState:
        if self.done.done():
            return FlightState.DONE
        if self.core is not None:
            return FlightState.RUNNING
        return FlightState.PREEMPTED if self.snapshot_core else FlightState.QUEUED


class LLMPool:
    def __init__(
        self,
        name: str,
        cores: list[LLMCore],
        scheduler: Scheduler,
        context: ContextManager,
        *,
        max_queued: int = 100_000,
        max_retries: int = 1,
        preemption: bool = True,
        preempt_recompute: bool = False,
        on_finish: Callable[[Flight, BaseException | None], None] | None = None,
        on_scheduler_error: Callable[[Scheduler, BaseException], None] | None = None,
        timeline: Timeline | None = None,
    ) -> None:
        if not cores:
            raise ValueError(f"pool {name} has no cores")
        self.name = name
        self.cores = cores
        self.scheduler = scheduler
        self.context = context
        self.max_queued = max_queued
        self.max_retries = max_retries
        self.preemption = preemption
        #: whether generations on cores without snapshots are preempted too (their resume recomputes prompt and text)
        self.preempt_recompute = preempt_recompute
        self._on_finish = on_finish
        self._on_scheduler_error = on_scheduler_error
        #: recent phases of every call, for the dashboard (one tuple appended per phase change)
        self.timeline = timeline if timeline is not None else Timeline()
        self._queued: dict[str, Flight] = {}
        self._running: dict[str, Flight] = {}
        #: preemptions asked of cores and not yet done: one per waiting job at most
        self._preempting: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.completed = 0
        self.failed = 0
        #: completion tokens of each program's typical answer, and of everyone's (moving means), for pricing a route
        #: when the caller gives no hint: an agent's answers are alike in length (a coding agent's long, a chat's short)
        self._outputs = ProgramMeans()
        #: wakes the pool when a call kept out by held room may take that room
        self._held_out_timer: asyncio.TimerHandle | None = None
        self._policy(lambda s: s.set_kv_cells(self.kv_cells()))
        for core in cores:
            core.on_capacity(self._capacity_freed)

    # ------------------------------------------------------------------ public

    def submit(self, syscall: LLMSyscall, agent: AgentRecord, *, stream: bool = False) -> Flight:
        """Queue an LLM syscall (call on the kernel loop). Raises before queueing if it can never run."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if len(self._queued) >= self.max_queued:
            raise QueueFullError(
                f"the LLM queue of {self.name} holds {len(self._queued)} syscalls (its limit); retry later or raise max_queued",
                queued=len(self._queued),
            )
        # refuse what no core could ever run (e.g. prompt longer than the context) before it waits in a queue
        errors = []
        for core in self.cores:
            try:
                core.check_request(syscall.request)
                break
            except AIOSError as exc:
                errors.append(exc)
        else:
            raise errors[0]
        now = self._loop.time()
        syscall.timing.queued = now
        job = Job(
            id=syscall.id,
            agent=agent.name,
            program=program_key(agent.name, syscall.program),
            priority=syscall.priority,
            arrival=now,
            enqueued_at=now,
            hint_tokens=syscall.hint_tokens,
            application=syscall.request.application(),
        )
        flight = Flight(syscall, agent, job, stream=stream)
        job.payload = flight
        self._queued[syscall.id] = flight
        self._policy(lambda s: s.on_arrival(job))
        self._policy(lambda s: s.push(job, now))
        self._fill()
        return flight

    def cancel(self, flight: Flight, reason: AIOSError) -> None:
        """Withdraw a flight wherever it is; its waiter gets ``reason``."""
        if flight.done.done():
            return
        flight.cancel_reason = reason
        if flight.id in self._queued:
            del self._queued[flight.id]
            self._policy(lambda s: s.remove(flight.job))
            self.context.discard(flight.id)
            self._finish(flight, reason)
        elif flight.core is not None:
            flight.core.cancel(flight.id)  # the consuming task ends it with ``reason``

    def shutdown(self, reason: AIOSError) -> None:
        if self._held_out_timer is not None:
            self._held_out_timer.cancel()
            self._held_out_timer = None
        for flight in list(self._queued.values()) + list(self._running.values()):
            self.cancel(flight, reason)

    def end_program(self, program: str) -> None:
        """A program ended: the scheduler forgets its history, and the cores let go of what they kept for its next call."""
        self._policy(lambda s: s.forget_program(program))
        self._outputs.forget(program)
        for core in self.cores:
            core.end_program(program)

    def kv_cells(self) -> int | None:
        """KV cells the pool's engines keep conversations in between calls; None when one of them does not say."""
        cells = [core.kv_cells() for core in self.cores]
        known = [c for c in cells if c is not None]
        return sum(known) if len(known) == len(cells) else None

    @property
    def queued(self) -> int:
        return len(self._queued)

    @property
    def running(self) -> int:
        return len(self._running)

    def flights(self) -> list[Flight]:
        return list(self._running.values()) + list(self._queued.values())

    def state_of(self, flight: Flight) -> FlightState:
        """``flight.state``, told apart: a queued flight the scheduler holds for room in the KV cache is HELD."""
        state = flight.state
        if state is FlightState.QUEUED and self._policy(lambda s: s.is_held(flight.job)):
            return FlightState.HELD
        return state

    # ------------------------------------------------------------------ policy calls, contained

    def _policy(self, fn: Callable[[Scheduler], Any]) -> Any:
        try:
            return fn(self.scheduler)
        except Exception as exc:  # noqa: BLE001 - a broken policy must not stop the kernel
            self._replace_scheduler(exc)
            return fn(self.scheduler)

    def _replace_scheduler(self, exc: BaseException) -> None:
        broken = self.scheduler
        log.error("scheduler %s raised %r; pool %s continues with fifo", broken.name, exc, self.name)
        fallback = FifoScheduler()
        now = self._loop.time() if self._loop else 0.0
        for flight in sorted(self._queued.values(), key=lambda f: f.job.seq):
            fallback.on_arrival(flight.job)
            fallback.push(flight.job, now)
        self.scheduler = fallback
        if self._on_scheduler_error is not None:
            self._on_scheduler_error(broken, exc)

    # ------------------------------------------------------------------ dispatch

    @staticmethod
    def _probe(flight: Flight) -> Generation:
        """What a core needs to tell whether ``flight`` fits."""
        return Generation(id=flight.id, request=flight.syscall.request, program=flight.job.program)

    def _candidates(self, flight: Flight) -> list[LLMCore]:
        """The cores ``flight`` may run on now."""
        if flight.snapshot_core is not None:
            # its snapshot lives on one core: it resumes there
            pinned = [core for core in self.cores if core.name == flight.snapshot_core]
            if pinned:
                return pinned
        able = [c for c in self.cores if c.continues_text] if flight.text_resume is not None else self.cores
        # cores this flight has not failed on and that are not marked down; while any exists, the flight waits
        # for one of them rather than going where it is likely to fail again
        preferred = [c for c in able if c.name not in flight.failed_on and c.healthy()]
        return preferred or able

    def _route(self, flight: Flight) -> LLMCore | None:
        """The core to start ``flight`` on now: its best core (:meth:`_best_core`) if that core may start one more call.

        A core held at the batch size its engine is fastest at (``batch_by_speed``) makes the call wait for it,
        not go to another core: the call's conversation is cached where it is cheapest, and a call sent elsewhere
        to avoid a short wait prefilled the whole conversation again (measured: four to nine such moves a round).
        """
        best = self._best_core(flight)
        return best if best is not None and self._below_batch_target(best) else None

    def _best_core(self, flight: Flight) -> LLMCore | None:
        """The core where ``flight`` costs least, among those with room for it now (None: none has)."""
        gen = self._probe(flight)
        # a flight whose snapshot lives on one core has that core alone as candidate: it resumes there or waits
        admitting = [c for c in self._candidates(flight) if c.can_admit(gen)]
        if len(admitting) <= 1:
            # nothing to choose between: skip the prefix lookup (it hashes the whole prompt)
            return admitting[0] if admitting else None
        request = flight.syscall.request
        measured = [c.engine_speed() for c in admitting]
        speeds = [s for s in measured if s is not None and s.ready]
        if len(speeds) == len(admitting):
            # every engine's costs are measured: the cheapest in seconds, a cache hit weighed against the load. The
            # held slot is priced like any other room (its conversation is cached there): a program whose engine is
            # crowded moves to one that idles, whose prefill costs less than the crowded engine's slower steps
            prompt = admitting[0].count_tokens(request)
            output = self._expected_output(flight)

            def cost(i: int) -> tuple[float, float]:
                core = admitting[i]
                uncached = max(0, prompt - core.prefix_affinity(request))
                return route_cost(speeds[i], uncached_tokens=uncached, output_tokens=output, running=core.running()), core.running() / core.max_batch()

            return admitting[min(range(len(admitting)), key=cost)]
        # costs not measured yet: a slot held for this program's next turn wins (its conversation is there, and the
        # room is kept for it), else the longest cached prefix
        held = next((c for c in admitting if c.holds_slot_for(flight.job.program)), None)
        if held is not None:
            return held
        return min(admitting, key=lambda c: (-c.prefix_affinity(request), c.running() / c.max_batch()))

    def _below_batch_target(self, core: LLMCore) -> bool:
        """Whether ``core`` may start one more call: fewer run there than the batch it is fastest at for the work waiting.

        The work waiting is every queued call (each could go to this core) plus what runs there. A core that
        weighs its engine's speed by batch size (an ``openai`` core with ``batch_by_speed``) then runs a few calls
        one after another where the engine is slow at two or three streams, in the scheduler's order; any other
        core fills every slot the work can.
        """
        running = core.running()
        return running < core.batch_target(running + len(self._queued))

    def _expected_output(self, flight: Flight) -> int:
        """Completion tokens to expect: the caller's hint, else its program's typical answer (everyone's for a
        program not seen yet), never more than ``max_tokens``.
        """
        hint = flight.syscall.hint_tokens
        if hint is None:
            typical = self._outputs.typical(flight.job.program)
            hint = round(typical) if typical is not None else flight.syscall.request.max_tokens
        return max(1, min(flight.syscall.request.max_tokens, hint))

    def _fill(self) -> None:
        assert self._loop is not None
        while self._queued:
            now = self._loop.time()
            job = self._policy(lambda s: s.peek(now))
            if job is None:
                return
            best = self._best_core(job.payload)
            if best is None:
                core = self._room_past_holds(job.payload, now)
            else:
                core = best if self._below_batch_target(best) else None
            if core is None:
                self._start_held(now)
                if best is not None:
                    self._backfill(best, now)
                return
            popped = self._policy(lambda s: s.pop(now))
            if popped is None:
                return
            self._start(popped.payload, core, now)

    def _room_past_holds(self, flight: Flight, now: float) -> LLMCore | None:
        """A core whose held room ``flight`` may take, because that room has kept it out for as long as it may.

        Held room lets a program's next turn start ahead of the policy's order. A program that keeps coming back
        within its lease would keep its slot for good, and a call it kept out would wait without bound, whatever
        the policy (PLAS's starvation guard included) says. So held room keeps a call out for a bounded time from
        the first time it does (the core's ``held_room_bound``: a minute at ``keep_slots`` 5); after that the call
        takes the next room that frees, held or not, and the lease that would have run out soonest goes. A call
        the policy judges starving (PLAS's guard, its ``max_wait``) does so at once: the policy's bound on waits
        holds against held room too.
        """
        gen = self._probe(flight)
        bounds = [(bound, core) for core in self._candidates(flight)
                  if (bound := core.held_room_bound(gen)) is not None and self._below_batch_target(core)]
        if not bounds:
            return None
        if flight.held_out_since is None:
            flight.held_out_since = now
        starving = bool(self._policy(lambda s: s.is_starving(flight.job, now)))
        due = now if starving else flight.held_out_since + min(bound for bound, _ in bounds)
        if now < due:
            self._wake_at(due, now)
            return None
        for _, core in sorted(bounds, key=lambda pair: pair[0]):
            if core.yield_held_room(gen):
                return core
        return None

    def _wake_at(self, when: float, now: float) -> None:
        """Fill the pool again at ``when`` (a single timer: the earliest wanted)."""
        assert self._loop is not None
        timer = self._held_out_timer
        if timer is not None and not timer.cancelled() and now < timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._held_out_timer = self._loop.call_at(when, self._fill)

    def _start_held(self, now: float) -> None:
        """Start the queued calls whose program a core holds a slot for, while the policy's next call waits for room.

        The held slot is kept for that program and no other call could take it, so starting the program's call
        ahead of the policy's order takes nothing from anyone; waiting instead would idle the slot until its lease
        ran out. How long held room may keep the head out is bounded (:meth:`_room_past_holds`). The scan over
        the queue happens only while some slot is held and the head is blocked.
        """
        held = set().union(*(core.slot_holders() for core in self.cores))
        if not held:
            return
        for flight in [f for f in self._queued.values() if f.job.program in held]:
            core = self._route(flight)
            if core is not None and core.holds_slot_for(flight.job.program) and self._policy(lambda s: s.remove(flight.job)):
                self._start(flight, core, now)

    def _backfill(self, waited_for: LLMCore, now: float) -> None:
        """Start queued calls on other cores while the policy's next call waits for ``waited_for`` to run fewer streams.

        The next call waits for its best core's batch target (``batch_by_speed``), not for room. Another core
        may have room, and a call that costs least there takes nothing the waiting call wants. Calls go in
        arrival order; each still waits for its own best core. Only a core holding back for speed blocks the
        head this way, so the scan happens only with ``batch_by_speed`` on.
        """
        others = [c for c in self.cores if c is not waited_for]
        for flight in sorted(self._queued.values(), key=lambda f: f.job.seq):
            if not any(c.running() < c.max_batch() for c in others):
                return  # no room left elsewhere: the rest of the queue is not looked at
            core = self._route(flight)
            if core is not None and core is not waited_for and self._policy(lambda s: s.remove(flight.job)):
                self._start(flight, core, now)

    def _capacity_freed(self) -> None:
        """A core freed room by itself (a held slot's lease ran out, or its program ended): fill it, once the pool has a loop."""
        if self._loop is not None:
            self._fill()

    def _start(self, flight: Flight, core: LLMCore, now: float) -> None:
        del self._queued[flight.id]
        flight.held_out_since = None
        for other in self.cores:
            if other is not core:
                # the program's turn runs elsewhere (a cheaper engine): any room held for it there is anyone's now,
                # and this fill goes on to use it (a core holding none does nothing)
                other.release_slot(flight.job.program)
        resume, flight.text_resume = flight.text_resume, None
        if flight.snapshot_core is not None:
            try:
                resume = self.context.take(flight.id)
            except AIOSError as exc:
                self._finish(flight, exc)
                return
        gen = Generation(id=flight.id, request=flight.syscall.request, agent=flight.agent.name, program=flight.job.program, resume=resume,
                         arrived=flight.syscall.timing.queued)
        self._policy(lambda s: s.on_dispatch(flight.job, now))
        timing = flight.syscall.timing
        if timing.started is None:
            timing.started = now
        flight.run_started = now
        self.timeline.waited(flight, now)
        try:
            stream = core.generate(gen)
        except AIOSError as exc:
            self._finish(flight, exc)
            return
        flight.core = core
        self._running[flight.id] = flight
        flight.task = self._loop.create_task(self._consume(flight, core, stream), name=f"llm:{flight.id[:8]}")  # type: ignore[union-attr]

    async def _consume(self, flight: Flight, core: LLMCore, stream: Any) -> None:
        job = flight.job
        loop_time = self._loop.time  # type: ignore[union-attr]
        asked = False
        last: Chunk | None = None
        try:
            async for chunk in stream:
                if chunk.prompt_tokens:
                    flight.prompt_tokens, flight.cached_tokens = chunk.prompt_tokens, chunk.cached_tokens
                    self._policy(lambda s: s.on_prefill(job, chunk.prompt_tokens))
                elif chunk.cached_tokens:
                    # remote servers report their cache hit in the final usage, after the prompt was counted
                    flight.cached_tokens = chunk.cached_tokens
                if chunk.tokens:
                    flight.completion_tokens += chunk.tokens
                    self._policy(lambda s: s.on_tokens(job, chunk.tokens))
                if chunk.text:
                    flight.parts.append(chunk.text)
                    if flight.deltas is not None:
                        flight.deltas.put_nowait(StreamPiece(chunk.text))
                if chunk.finish_reason is not None:
                    last = chunk
                    break
                if (
                    not asked
                    and self.preemption
                    and self._preemptible(core)
                    and len(self._queued) > len(self._preempting)
                    and flight.cancel_reason is None
                ):
                    now = loop_time()
                    if self._policy(lambda s: s.should_preempt(job, now)) and self._is_victim(flight, now):
                        core.preempt(flight.id)
                        self._preempting.add(flight.id)
                        asked = True
        except asyncio.CancelledError:
            core.cancel(flight.id)
            last = Chunk(finish_reason="cancelled")
        except Exception as exc:  # noqa: BLE001 - a core that dies mid-stream fails this flight only
            log.exception("core %s failed while streaming %s", core.name, flight.id)
            last = Chunk(finish_reason="error", error=CoreError(f"core {core.name} failed mid-request: {exc}", retryable=True))
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # noqa: BLE001
                    pass
        if last is None:
            last = Chunk(finish_reason="error", error=CoreError(f"core {core.name} ended the stream without a finish reason", retryable=True))
        now = loop_time()
        self._policy(lambda s: s.on_release(job, now))
        self._preempting.discard(flight.id)
        self._running.pop(flight.id, None)
        flight.core = None
        flight.syscall.timing.service += now - flight.run_started
        self.timeline.ran(flight, core.name, now, last.finish_reason)
        self._outcome(flight, core, last, now)
        self._fill()

    def _is_victim(self, flight: Flight, now: float) -> bool:
        """Whether ``flight`` ranks highest for eviction among running flights not already being preempted."""
        rank = self._policy(lambda s: s.victim_rank(flight.job, now))
        for other in self._running.values():
            if other is flight or other.id in self._preempting or other.core is None or not self._preemptible(other.core):
                continue
            if self._policy(lambda s: s.victim_rank(other.job, now)) > rank:
                return False
        return True

    def _preemptible(self, core: LLMCore) -> bool:
        """Whether the policy may preempt generations on ``core``.

        One without snapshots (a remote server) resumes by prefilling the prompt and the text so far again:
        with more agents than slots, PLAS would pay that on every swap, for no one served sooner. Its queue
        order still decides who runs next; ``preempt_recompute`` turns preemption on for such cores too.
        """
        return core.supports_snapshot or self.preempt_recompute

    def _outcome(self, flight: Flight, core: LLMCore, last: Chunk, now: float) -> None:
        reason = last.finish_reason
        if flight.cancel_reason is not None:
            if last.snapshot is not None:
                core.discard(last.snapshot)
            self._finish(flight, flight.cancel_reason)
            return
        if reason == Finish.PREEMPTED:
            flight.syscall.timing.preemptions += 1
            flight.job.preemptions += 1
            flight.agent.preemptions += 1
            if last.snapshot is not None:
                self.context.save(flight.agent.name, last.snapshot)
                flight.snapshot_core = core.name
            self._requeue(flight, now)
            return
        if reason == Finish.ERROR:
            error = last.error if isinstance(last.error, AIOSError) else CoreError(f"core {core.name} failed: {last.error}", retryable=True)
            retryable = isinstance(error, CoreError) and error.retryable
            # before its first token a flight starts over elsewhere; after it, a core that resumes from text continues it
            if retryable and flight.attempts < self.max_retries and flight.snapshot_core is None and (not flight.parts or self._can_continue(core)):
                flight.attempts += 1
                flight.failed_on.add(core.name)
                if flight.parts:
                    log.warning("moving %s (%d tokens in) off core %s, which failed: %s", flight.id, flight.completion_tokens, core.name, error.message)
                    state = {"text": "".join(flight.parts), "tokens": flight.completion_tokens, "prompt_tokens": flight.prompt_tokens}
                    flight.text_resume = Snapshot(gen_id=flight.id, core="", state=state)
                else:
                    log.warning("retrying %s after core %s failed: %s", flight.id, core.name, error.message)
                    flight.completion_tokens = 0
                self._requeue(flight, now)
                return
            self._finish(flight, error)
            return
        if reason == Finish.CANCELLED:
            self._finish(flight, last.error if isinstance(last.error, AIOSError) else SyscallCancelledError(f"core {core.name} cancelled the generation"))
            return
        content = last.content if last.content is not None else "".join(flight.parts)
        response = LLMResponse(
            content=(content or None) if last.tool_calls else content,
            tool_calls=last.tool_calls or [],
            finish_reason=str(reason or Finish.STOP),  # type: ignore[arg-type]
            usage=Usage(prompt_tokens=flight.prompt_tokens, completion_tokens=flight.completion_tokens, cached_tokens=flight.cached_tokens),
            core=core.name,
            syscall_id=flight.id,
        )
        self._finish(flight, None, response)

    def _can_continue(self, failed: LLMCore) -> bool:
        """Whether a core other than ``failed`` can continue an answer from its text."""
        return any(c.continues_text and c is not failed for c in self.cores)

    def _requeue(self, flight: Flight, now: float) -> None:
        flight.job.enqueued_at = now
        self._queued[flight.id] = flight
        self._policy(lambda s: s.push(flight.job, now))

    def _finish(self, flight: Flight, error: BaseException | None, response: LLMResponse | None = None) -> None:
        if flight.done.done():
            return
        flight.job.ended_at = self._loop.time() if self._loop else None
        self._policy(lambda s: s.on_finish(flight.job))
        flight.syscall.timing.finished = flight.job.ended_at
        if error is None:
            self.completed += 1
            self._outputs.add(flight.job.program, flight.completion_tokens)
            flight.done.set_result(response)  # type: ignore[arg-type]
            if flight.deltas is not None:
                flight.deltas.put_nowait(StreamPiece("", response))
        else:
            self.failed += 1
            flight.done.set_exception(error)
            flight.done.exception()  # mark retrieved: the waiter may already be gone
            if flight.deltas is not None:
                flight.deltas.put_nowait(error)
        if self._on_finish is not None:
            self._on_finish(flight, error)
