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
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from aios_core.cores.base import Chunk, CoreStats, Generation, LLMCore, Snapshot
from aios_core.cores.tool_format import may_be_tool_call, parse_tool_calls
from aios_core.errors import CoreError

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class EngineSeq:
    """A sequence inside the engine. ``state`` belongs to the subclass (token ids, KV slot, ...)."""

    gen: Generation
    out: asyncio.Queue[Chunk]
    text: str = ""
    emitted: int = 0
    n_generated: int = 0
    prefilled: bool = False
    resumed: bool = False
    reported_prompt: bool = False
    prompt_tokens: int = 0
    cached_tokens: int = 0
    want_preempt: bool = False
    want_cancel: bool = False
    done: bool = False
    #: how it ended (set just before the engine releases it): lets an engine keep the KV of a completed answer
    finish: str | None = None
    state: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.gen.id


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
            seq.resumed = True
            seq.reported_prompt = True
        self._seqs[gen.id] = seq
        self._wake.set()
        return self._stream(seq)

    def preempt(self, gen_id: str) -> None:
        seq = self._seqs.get(gen_id)
        if seq is not None and not seq.done:
            seq.want_preempt = True

    def cancel(self, gen_id: str) -> None:
        seq = self._seqs.get(gen_id)
        if seq is not None and not seq.done:
            seq.want_cancel = True
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
        seq.done = True
        seq.finish = chunk.finish_reason
        if self._seqs.pop(seq.id, None) is not None and chunk.finish_reason != "preempted":
            try:
                self._release(seq)
            except Exception:  # noqa: BLE001 - freeing must never take the engine down
                log.exception("core %s: releasing %s failed", self.name, seq.id)
        seq.out.put_nowait(chunk)

    def _settle(self) -> None:
        """Apply cancel / preempt requests; runs between steps only."""
        for seq in list(self._seqs.values()):
            if seq.want_cancel:
                self._finish(seq, Chunk(finish_reason="cancelled"))
            elif seq.want_preempt:
                if not seq.prefilled:
                    # nothing computed yet: resuming means starting over, which costs nothing extra
                    snap = Snapshot(gen_id=seq.id, core=self.name, state=self._base_state(seq))
                    if seq.gen.resume is not None:
                        snap = seq.gen.resume
                    self._seqs.pop(seq.id, None)
                    seq.done = True
                    seq.out.put_nowait(Chunk(finish_reason="preempted", snapshot=snap))
                    continue
                try:
                    snap = self._snapshot(seq)
                except Exception as exc:  # noqa: BLE001
                    log.exception("core %s: snapshot of %s failed; it keeps running", self.name, seq.id)
                    seq.want_preempt = False
                    seq.extra["snapshot_error"] = repr(exc)
                    continue
                snap.state.update(self._base_state(seq))
                self._stats.snapshots += 1
                self._seqs.pop(seq.id, None)
                try:
                    self._release(seq)
                except Exception:  # noqa: BLE001
                    log.exception("core %s: releasing %s after snapshot failed", self.name, seq.id)
                seq.done = True
                seq.out.put_nowait(Chunk(finish_reason="preempted", snapshot=snap))

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
                        self._finish(seq, Chunk(finish_reason="error", error=CoreError(f"restoring a snapshot failed: {exc}", retryable=False)))
            batch = [s for s in batch if not s.done]
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                outputs = await self._step(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an engine failure fails this batch, not the kernel
                log.exception("core %s: engine step failed", self.name)
                for seq in batch:
                    self._finish(seq, Chunk(finish_reason="error", error=CoreError(f"core {self.name} failed mid-request: {exc}", retryable=True)))
                try:
                    await self._reset()
                except Exception:  # noqa: BLE001
                    log.exception("core %s: reset after failure failed", self.name)
                continue
            self._stats.busy_seconds += time.perf_counter() - t0
            self._stats.steps += 1
            self._stats.batch_size_sum += len(batch)
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
        finish: str | None = None
        if request.stop:
            cut = min((i for i in (seq.text.find(s, max(0, seq.emitted - len(s))) for s in request.stop) if i >= 0), default=-1)
            if cut >= 0:
                seq.text = seq.text[:cut]
                finish = "stop"
        if finish is None and out.eos:
            finish = "stop"
        if finish is None and seq.n_generated >= request.max_tokens:
            finish = "length"
        chunk = Chunk(tokens=out.tokens)
        if first:
            chunk.prompt_tokens, chunk.cached_tokens = seq.prompt_tokens, seq.cached_tokens
        if finish is None:
            chunk.text = self._releasable(seq)
            seq.out.put_nowait(chunk)
            return
        chunk.finish_reason = finish  # type: ignore[assignment]
        if request.tools and request.tool_choice != "none":
            calls = parse_tool_calls(seq.text, request.tools)
            if calls:
                chunk.tool_calls = calls
                chunk.finish_reason = "tool_calls"
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
