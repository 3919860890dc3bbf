"""A continuous-batching engine loop shared by the step-based cores (sim, llamacpp, transformers).

The loop owns the set of running sequences. Between two engine steps it
applies what the kernel asked for (preempt, cancel), admits new and resumed
sequences, then runs one step for the whole batch: every sequence that needs
its prompt processed is prefilled in that step, and every other one decodes
one token. Finished sequences leave at once, so a new request joins the batch
at the next step (continuous batching).

Subclasses supply only the engine: :meth:`_step`, :meth:`_snapshot`,
:meth:`_restore` and :meth:`_release`. Stop strings, ``max_tokens``, streaming
hold-back and tool-call parsing are handled here once for all of them.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aios_core.cores.base import Chunk, CoreStats, Finish, Generation, LLMCore, Snapshot
from aios_core.cores.tool_format import may_be_tool_call, parse_tool_calls
from aios_core.errors import CoreError

log = logging.getLogger(__name__)


class SeqPhase(enum.Enum):
    """Where a sequence is in the engine: WAITING -> HOLDING -> DONE (HOLDING -> WAITING after an engine reset)."""

    #: handed to the core; the engine holds nothing for it yet (a preemption just hands the job back)
    WAITING = "waiting"
    #: the engine holds state for it (KV cells, a slot): a preemption snapshots it, a cancel frees it
    HOLDING = "holding"
    #: its stream has its last chunk (finished, preempted, cancelled or failed)
    DONE = "done"


class SeqAsk(enum.Enum):
    """What the kernel asked of a running sequence, applied at the next step boundary (a cancel overrides a preemption)."""

    NONE = "none"
    PREEMPT = "preempt"
    CANCEL = "cancel"


@dataclass(eq=False, slots=True)
class EngineSeq:
    """A sequence inside the engine. ``state`` belongs to the subclass (token ids, KV slot, ...)."""

    gen: Generation
    out: asyncio.Queue[Chunk]
    text: str = ""
    emitted: int = 0
    n_generated: int = 0
    phase: SeqPhase = SeqPhase.WAITING
    ask: SeqAsk = SeqAsk.NONE
    #: the prompt usage went out in a chunk already (a resumed sequence reported it before it was paused)
    reported_prompt: bool = False
    prompt_tokens: int = 0
    cached_tokens: int = 0
    #: how it ended (set just before the engine releases it): lets an engine keep the KV of a completed answer
    finish: Finish | None = None
    state: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.gen.id

    @property
    def prefilled(self) -> bool:
        """Whether the engine holds state for it (engines set it True once they do, False when that state is gone)."""
        return self.phase is SeqPhase.HOLDING

    @prefilled.setter
    def prefilled(self, holding: bool) -> None:
        if self.phase is SeqPhase.DONE:
            return
        self.phase = SeqPhase.HOLDING if holding else SeqPhase.WAITING

    @property
    def done(self) -> bool:
        return self.phase is SeqPhase.DONE

    @property
    def want_preempt(self) -> bool:
        return self.ask is SeqAsk.PREEMPT

    @property
    def want_cancel(self) -> bool:
        return self.ask is SeqAsk.CANCEL

    def ask_preempt(self) -> None:
        """Pause at the next step boundary (unless it ended or a cancel was asked)."""
        if self.phase is not SeqPhase.DONE and self.ask is SeqAsk.NONE:
            self.ask = SeqAsk.PREEMPT

    def ask_cancel(self) -> None:
        if self.phase is not SeqPhase.DONE:
            self.ask = SeqAsk.CANCEL

    def end(self, finish: Finish | None = None) -> None:
        self.phase = SeqPhase.DONE
        if finish is not None:
            self.finish = finish


@dataclass(frozen=True, slots=True)
class StepTiming:
    """One engine step as a step observer sees it (see :meth:`BatchingCore.observe_steps`)."""

    #: wall time of the step, awaited from the loop (the engine's compute plus its planning)
    seconds: float
    #: sequences in the step
    batch: int
    #: whether some sequence of the step was still processing its prompt
    prefill: bool
    #: tokens of context the step's sequences attend to (prompt + generated so far, summed, as of the step's start)
    context: int = 0


@dataclass(slots=True)
class StepOutput:
    """What one step produced for one sequence."""

    seq: EngineSeq
    text: str = ""
    tokens: int = 0
    #: the model emitted end-of-sequence (or the engine decided the sequence is complete)
    eos: bool = False


class BatchingCore(LLMCore):
    """Base of cores whose engine advances all running sequences one step at a time."""

    def __init__(self, name: str, model: str, max_batch: int) -> None:
        super().__init__(name, model)
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._max_batch = max_batch
        self._seqs: dict[str, EngineSeq] = {}
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stats = CoreStats(name=name, model=model, max_batch=max_batch)
        self._step_observers: list[Callable[[StepTiming], None]] = []

    # ------------------------------------------------------------------ engine hooks

    async def _load(self) -> None:
        """Load the model (runs inside :meth:`start`)."""

    async def _unload(self) -> None:
        """Free the model (runs inside :meth:`stop`)."""

    @abc.abstractmethod
    async def _step(self, seqs: list[EngineSeq]) -> list[StepOutput]:
        """Run one engine step for ``seqs``: prefill those with ``prefilled`` False, decode one token for the rest.

        Set ``seq.prompt_tokens`` / ``seq.cached_tokens`` when prefilling. Raise
        to signal an engine failure: every sequence in the batch then fails
        with a retryable CoreError and :meth:`_reset` is called.
        """

    @abc.abstractmethod
    def _snapshot(self, seq: EngineSeq) -> Snapshot:
        """Capture ``seq``'s engine state so that :meth:`_restore` continues it exactly."""

    @abc.abstractmethod
    def _restore(self, seq: EngineSeq, snapshot: Snapshot) -> None:
        """Make ``seq`` continue from ``snapshot`` (called before its first step); set ``seq.prefilled``."""

    @abc.abstractmethod
    def _release(self, seq: EngineSeq) -> None:
        """Free the engine resources of ``seq`` (KV cells, slot)."""

    async def _reset(self) -> None:
        """Bring the engine back to a clean state after a failed step."""

    def _prefilling(self, seq: EngineSeq) -> bool:
        """Whether ``seq`` still has prompt tokens to process (for step observers); engines that know better override it."""
        return not seq.prefilled

    def observe_steps(self, observer: Callable[[StepTiming], None]) -> Callable[[], None]:
        """Call ``observer`` after every engine step (e.g. to fit a cost model); returns the function that stops it.

        The observer runs on the core's loop between two steps: it must be quick and must not raise.
        """
        self._step_observers.append(observer)

        def stop() -> None:
            if observer in self._step_observers:
                self._step_observers.remove(observer)

        return stop

    def _handed_over(self) -> Iterator[EngineSeq]:
        """Sequences given to the core but not yet admitted into the engine (no engine state, so no KV yet).

        Admission checks must count what these will need, or a burst of
        admissions between two steps would overcommit the KV cache.
        """
        return (s for s in self._seqs.values() if s.state is None and not s.done)

    # ------------------------------------------------------------------ LLMCore

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._wake = asyncio.Event()
        await self._load()
        self._runner = asyncio.create_task(self._run(), name=f"core:{self.name}")

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                pass
        for seq in list(self._seqs.values()):
            self._finish(seq, Chunk(finish_reason="cancelled", error=CoreError(f"core {self.name} stopped")))
        await self._unload()

    def max_batch(self) -> int:
        return self._max_batch

    def running(self) -> int:
        return len(self._seqs)

    def generate(self, gen: Generation) -> AsyncIterator[Chunk]:
        if self._runner is None or self._wake is None:
            raise CoreError(f"core {self.name} is not started")
        if gen.id in self._seqs:
            raise CoreError(f"generation {gen.id} is already running on core {self.name}")
        self.check_request(gen.request)
        seq = EngineSeq(gen=gen, out=asyncio.Queue())
        if gen.resume is not None:
            state = gen.resume.state
            seq.text = state.get("text", "")
            seq.emitted = state.get("emitted", 0)
            seq.n_generated = state.get("n_generated", 0)
            seq.prompt_tokens = state.get("prompt_tokens", 0)
            seq.reported_prompt = True
        self._seqs[gen.id] = seq
        self._wake.set()
        return self._stream(seq)

    def preempt(self, gen_id: str) -> None:
        seq = self._seqs.get(gen_id)
        if seq is not None:
            seq.ask_preempt()

    def cancel(self, gen_id: str) -> None:
        seq = self._seqs.get(gen_id)
        if seq is not None and not seq.done:
            seq.ask_cancel()
            if self._wake is not None:
                self._wake.set()

    def stats(self) -> CoreStats:
        self._stats.running = len(self._seqs)
        return self._stats

    # ------------------------------------------------------------------ internals

    async def _stream(self, seq: EngineSeq) -> AsyncIterator[Chunk]:
        try:
            while True:
                chunk = await seq.out.get()
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            if not seq.done:
                # the consumer went away (cancelled, disconnected): free the slot
                self.cancel(seq.id)

    def _finish(self, seq: EngineSeq, chunk: Chunk) -> None:
        if seq.done:
            return
        reason = chunk.finish_reason
        seq.end(reason if reason is None or isinstance(reason, Finish) else Finish(reason))
        if self._seqs.pop(seq.id, None) is not None and chunk.finish_reason != Finish.PREEMPTED:
            try:
                self._release(seq)
            except Exception:  # noqa: BLE001 - freeing must never take the engine down
                log.exception("core %s: releasing %s failed", self.name, seq.id)
        seq.out.put_nowait(chunk)

    def _settle(self) -> None:
        """Apply cancel / preempt requests; runs between steps only."""
        for seq in list(self._seqs.values()):
            if seq.ask is SeqAsk.CANCEL:
                self._finish(seq, Chunk(finish_reason=Finish.CANCELLED))
            elif seq.ask is SeqAsk.PREEMPT:
                if seq.phase is SeqPhase.WAITING:
                    # nothing computed yet: resuming means starting over, which costs nothing extra
                    snap = Snapshot(gen_id=seq.id, core=self.name, state=self._base_state(seq))
                    if seq.gen.resume is not None:
                        snap = seq.gen.resume
                    self._seqs.pop(seq.id, None)
                    seq.end(Finish.PREEMPTED)
                    seq.out.put_nowait(Chunk(finish_reason=Finish.PREEMPTED, snapshot=snap))
                    continue
                try:
                    snap = self._snapshot(seq)
                except Exception as exc:  # noqa: BLE001
                    log.exception("core %s: snapshot of %s failed; it keeps running", self.name, seq.id)
                    seq.ask = SeqAsk.NONE
                    seq.extra["snapshot_error"] = repr(exc)
                    continue
                snap.state.update(self._base_state(seq))
                self._stats.snapshots += 1
                self._seqs.pop(seq.id, None)
                try:
                    self._release(seq)
                except Exception:  # noqa: BLE001
                    log.exception("core %s: releasing %s after snapshot failed", self.name, seq.id)
                seq.end(Finish.PREEMPTED)
                seq.out.put_nowait(Chunk(finish_reason=Finish.PREEMPTED, snapshot=snap))

    @staticmethod
    def _base_state(seq: EngineSeq) -> dict[str, Any]:
        return {"text": seq.text, "emitted": seq.emitted, "n_generated": seq.n_generated, "prompt_tokens": seq.prompt_tokens}

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._settle()
            if not self._seqs:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(self._seqs.values())
            for seq in batch:
                if seq.gen.resume is not None and not seq.prefilled:
                    try:
                        self._restore(seq, seq.gen.resume)
                        self._stats.restores += 1
                    except Exception as exc:  # noqa: BLE001
                        log.exception("core %s: restore of %s failed", self.name, seq.id)
                        self._finish(seq, Chunk(finish_reason=Finish.ERROR, error=CoreError(f"restoring a snapshot failed: {exc}", retryable=False)))
            batch = [s for s in batch if not s.done]
            if not batch:
                continue
            observers = list(self._step_observers)
            if observers:
                prefill = any(self._prefilling(s) for s in batch)
                context = sum(s.prompt_tokens + s.n_generated for s in batch)
            t0 = time.perf_counter()
            try:
                outputs = await self._step(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an engine failure fails this batch, not the kernel
                log.exception("core %s: engine step failed", self.name)
                for seq in batch:
                    self._finish(seq, Chunk(finish_reason=Finish.ERROR, error=CoreError(f"core {self.name} failed mid-request: {exc}", retryable=True)))
                try:
                    await self._reset()
                except Exception:  # noqa: BLE001
                    log.exception("core %s: reset after failure failed", self.name)
                continue
            elapsed = time.perf_counter() - t0
            self._stats.busy_seconds += elapsed
            self._stats.steps += 1
            self._stats.batch_size_sum += len(batch)
            if observers:
                timing = StepTiming(seconds=elapsed, batch=len(batch), prefill=prefill, context=context)
                for observer in observers:
                    try:
                        observer(timing)
                    except Exception:  # noqa: BLE001 - an observer must not stop the engine
                        log.exception("core %s: a step observer failed; it is removed", self.name)
                        if observer in self._step_observers:
                            self._step_observers.remove(observer)
            for out in outputs:
                self._advance(out)
            # let consumers see this step's tokens (and ask for preemption) before the next step
            await asyncio.sleep(0)

    def _advance(self, out: StepOutput) -> None:
        seq = out.seq
        if seq.done:
            return
        first = not seq.reported_prompt
        if first:
            seq.reported_prompt = True
            self._stats.prompt_tokens += seq.prompt_tokens
            self._stats.cached_tokens += seq.cached_tokens
        seq.prefilled = True
        seq.text += out.text
        seq.n_generated += out.tokens
        self._stats.generated_tokens += out.tokens
        request = seq.gen.request
        finish: Finish | None = None
        if request.stop:
            cut = min((i for i in (seq.text.find(s, max(0, seq.emitted - len(s))) for s in request.stop) if i >= 0), default=-1)
            if cut >= 0:
                seq.text = seq.text[:cut]
                finish = Finish.STOP
        if finish is None and out.eos:
            finish = Finish.STOP
        if finish is None and seq.n_generated >= request.max_tokens:
            finish = Finish.LENGTH
        chunk = Chunk(tokens=out.tokens)
        if first:
            chunk.prompt_tokens, chunk.cached_tokens = seq.prompt_tokens, seq.cached_tokens
        if finish is None:
            chunk.text = self._releasable(seq)
            seq.out.put_nowait(chunk)
            return
        chunk.finish_reason = finish
        if request.tools and request.tool_choice != "none":
            calls = parse_tool_calls(seq.text, request.tools)
            if calls:
                chunk.tool_calls = calls
                chunk.finish_reason = Finish.TOOL_CALLS
                chunk.content = ""
        if chunk.tool_calls is None:
            chunk.text = seq.text[seq.emitted :]
            seq.emitted = len(seq.text)
        self._finish(seq, chunk)

    def _releasable(self, seq: EngineSeq) -> str:
        """Text that can be streamed now: hold back a possible stop-string prefix and possible tool-call JSON."""
        request = seq.gen.request
        if request.tools and request.tool_choice != "none" and may_be_tool_call(seq.text):
            return ""
        limit = len(seq.text)
        for s in request.stop:
            for k in range(min(len(s) - 1, len(seq.text)), 0, -1):
                if seq.text.endswith(s[:k]):
                    limit = min(limit, len(seq.text) - k)
                    break
        if limit <= seq.emitted:
            return ""
        piece = seq.text[seq.emitted : limit]
        seq.emitted = limit
        return piece
