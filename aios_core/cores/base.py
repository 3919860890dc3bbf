"""The one interface every LLM core implements.

The kernel hands a core :class:`Generation` jobs chosen by the scheduler and
reads each job's tokens from an async stream. A core batches whatever it has
been handed (continuous batching where the engine allows). Preemption is a
request: :meth:`LLMCore.preempt` asks the core to pause a running generation at
its next step boundary; the job's stream then ends with a chunk whose
``finish_reason`` is ``"preempted"`` and which carries a :class:`Snapshot`.
Handing the core a new :class:`Generation` with ``resume=snapshot`` continues
exactly where it stopped, without recomputing what was already generated
(KV state for local cores, text so far for remote ones).
"""

from __future__ import annotations

import abc
import enum
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aios_core.cores.engine_speed import EngineSpeed
from aios_core.syscalls import LLMRequest, ToolCall

log = logging.getLogger(__name__)

#: the finish reasons as the strings a core may also write (a Chunk turns them into :class:`Finish`)
ChunkFinish = Literal["stop", "length", "tool_calls", "preempted", "cancelled", "error"]


class Finish(enum.StrEnum):
    """How a generation's stream ended (its last chunk's ``finish_reason``).

    A ``StrEnum``: a member equals its string, so ``chunk.finish_reason == "stop"``
    and the wire format (the OpenAI-style strings) are unchanged.
    """

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    #: paused at a step boundary; the chunk carries the snapshot to resume from
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def completed(self) -> bool:
        """The model finished its answer (as opposed to being paused, cancelled or failing)."""
        return self in _COMPLETED


_COMPLETED = frozenset({Finish.STOP, Finish.LENGTH, Finish.TOOL_CALLS})


@dataclass(slots=True)
class Snapshot:
    """A paused generation. ``data`` is the engine state (None when the core resumes from text)."""

    gen_id: str
    core: str
    #: tokens (ids or text pieces) generated so far, and any small core state needed to resume
    state: dict[str, Any] = field(default_factory=dict)
    data: bytes | None = None
    #: set by the context manager when it moves ``data`` to disk to respect its memory budget
    path: str | None = None
    nbytes: int = 0

    def __post_init__(self) -> None:
        if self.data is not None and not self.nbytes:
            self.nbytes = len(self.data)


@dataclass(slots=True)
class Generation:
    """One LLM job handed to a core: a request, its identity, and optionally a snapshot to resume."""

    id: str
    request: LLMRequest
    agent: str = ""
    program: str = ""
    resume: Snapshot | None = None
    #: when the kernel received the call (its loop's clock): cores that learn how long programs pause between calls
    arrived: float | None = None


@dataclass(slots=True)
class Chunk:
    """A piece of a generation's output stream.

    ``tokens`` counts generated tokens in this chunk (what the scheduler meters).
    The first chunk of a (re)started generation reports ``prompt_tokens`` and
    ``cached_tokens``; the last one has ``finish_reason`` set.
    """

    text: str = ""
    tokens: int = 0
    finish_reason: Finish | ChunkFinish | None = None
    tool_calls: list[ToolCall] | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    snapshot: Snapshot | None = None
    error: BaseException | None = None
    #: the final chunk carries the cleaned message content (tool-call markup removed) when it differs from the streamed text
    content: str | None = None

    def __post_init__(self) -> None:
        # cores may write the reason as a plain string; an unknown one fails here, where the core made it
        if self.finish_reason is not None and not isinstance(self.finish_reason, Finish):
            self.finish_reason = Finish(self.finish_reason)


@dataclass(slots=True)
class CoreStats:
    name: str
    model: str
    running: int = 0
    max_batch: int = 1
    steps: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    snapshots: int = 0
    restores: int = 0
    busy_seconds: float = 0.0
    batch_size_sum: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_batch(self) -> float:
        return self.batch_size_sum / self.steps if self.steps else 0.0

    @property
    def prefix_hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "running": self.running,
            "max_batch": self.max_batch,
            "steps": self.steps,
            "generated_tokens": self.generated_tokens,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "prefix_hit_rate": round(self.prefix_hit_rate, 4),
            "mean_batch": round(self.mean_batch, 3),
            "snapshots": self.snapshots,
            "restores": self.restores,
            "busy_seconds": round(self.busy_seconds, 4),
            **self.extra,
        }


class LLMCore(abc.ABC):
    """A model engine the kernel can schedule onto.

    Implementations: ``sim`` (virtual clock), ``llamacpp`` (embedded default),
    ``transformers`` and ``openai`` (any OpenAI-compatible server).
    """

    #: registry name of the core kind (e.g. "sim", "llamacpp")
    kind: str = "core"
    #: whether preempt() yields a snapshot that resumes without recomputation
    supports_snapshot: bool = True
    #: whether generate() continues an answer from its text alone (a snapshot with ``state["text"]`` and no
    #: ``data``, made anywhere): an answer whose core died mid-stream then moves here instead of failing
    continues_text: bool = False

    def __init__(self, name: str, model: str) -> None:
        self.name = name
        self.model = model
        self._capacity_listeners: list[Callable[[], None]] = []

    def on_capacity(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when this core frees room without a generation ending (a held slot's lease ran out).

        The pool fills free room whenever a generation ends; room that frees otherwise would stay idle until then.
        """
        self._capacity_listeners.append(listener)

    def capacity_freed(self) -> None:
        for listener in self._capacity_listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001 - a listener's failure must not break the core's timer
                log.exception("core %s: a capacity listener failed", self.name)

    def holds_slot_for(self, program: str) -> bool:
        """Whether a slot is held here for ``program``'s next call (its conversation's KV kept across its tool call)."""
        return False

    def slot_holders(self) -> set[str]:
        """The programs a slot is held for here now."""
        return set()

    def end_program(self, program: str) -> None:
        """``program`` ended (its agent left): let go of whatever is kept here for its next call."""

    def release_slot(self, program: str) -> None:
        """``program``'s next call runs on another core: let go of the room held here for it, without waking the pool
        (the pool asks this while it fills free room, and goes on to use it)."""

    def held_room_bound(self, gen: Generation) -> float | None:
        """Seconds room held here for other programs may keep ``gen`` out; None when held room is not what keeps it out."""
        return None

    def yield_held_room(self, gen: Generation) -> bool:
        """Give ``gen`` room held here for other programs (it was kept out for its bound); whether it fits now."""
        return False

    async def start(self) -> None:
        """Load the model / open connections. Called once by the kernel, inside its loop."""

    async def stop(self) -> None:
        """Release everything; streams still open end with a ``cancelled`` chunk."""

    @abc.abstractmethod
    def max_batch(self) -> int:
        """How many generations this core runs at once."""

    @abc.abstractmethod
    def running(self) -> int:
        """How many generations this core runs now."""

    def can_admit(self, gen: Generation) -> bool:
        """Whether ``gen`` fits now (a free slot and, for local cores, room in the KV cache)."""
        return self.running() < self.max_batch()

    def batch_target(self, demand: int) -> int:
        """How many generations to let run at once when ``demand`` (running plus waiting) could: at most ``max_batch``.

        The pool starts no more than this on the core. An engine whose step does not grow smoothly with the
        batch can make fewer tokens a second at some batch sizes than at a smaller one; a core that measures
        its engine (``openai``) says so here. Others fill every slot the demand can.
        """
        return min(self.max_batch(), max(1, demand))

    def healthy(self) -> bool:
        """False while a recent failure makes the next request likely to fail too (e.g. a server that refused connections).

        Routing tries healthy cores first; an unhealthy core still gets work
        when no healthy one can take it, so a pool never stalls on a wrong guess.
        """
        return True

    def check_request(self, request: LLMRequest) -> None:
        """Raise ContextLengthError (or InvalidSyscallError) when the request can never run on this core."""

    @abc.abstractmethod
    def generate(self, gen: Generation) -> AsyncIterator[Chunk]:
        """Start (or, with ``gen.resume``, continue) a generation and stream its chunks."""

    @abc.abstractmethod
    def preempt(self, gen_id: str) -> None:
        """Ask the core to pause ``gen_id`` at its next step; its stream ends with a ``preempted`` chunk."""

    @abc.abstractmethod
    def cancel(self, gen_id: str) -> None:
        """Stop ``gen_id`` and free its resources; its stream ends with a ``cancelled`` chunk."""

    def discard(self, snapshot: Snapshot) -> None:
        """Free a snapshot that will never be resumed (its agent ended or was cancelled)."""

    async def clear_cache(self) -> int:
        """Drop reusable cached state nobody is using (prefix caches); return how many entries went.

        For measurements that must start cold, e.g. each round of a benchmark.
        """
        return 0

    def prefix_affinity(self, request: LLMRequest) -> int:
        """Prompt tokens this core could reuse from its cache for ``request`` (routing prefers higher)."""
        return 0

    def kv_cells(self) -> int | None:
        """KV cells in which this engine keeps conversations between calls (its prefix cache), when they bound it.

        The scheduler keeps the conversations of the programs in flight within them (load control, see
        :mod:`aios_core.scheduler.working_set`). None: unknown, or the engine keeps them elsewhere too.
        """
        return None

    def engine_speed(self) -> EngineSpeed | None:
        """The engine's measured costs, when it runs elsewhere and several such cores share a pool (routing prices them).

        None: routing prefers the core with the most of the prompt cached, then the least loaded.
        """
        return None

    def count_tokens(self, request: LLMRequest) -> int:
        """Prompt size in tokens (an estimate is fine for scheduling)."""
        chars = sum(len(m.content or "") for m in request.messages)
        return max(1, chars // 4)

    @abc.abstractmethod
    def stats(self) -> CoreStats:
        """Counters for ``aios top``, the bench and Prometheus."""
