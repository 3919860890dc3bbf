"""Recent syscall phases for the dashboard's timeline: a bounded ring buffer the kernel appends to.

A scheduler is easier to judge by looking at it than by reading counters:
which call waited, which one ran, which one was preempted and when it came
back. The kernel records one :class:`Segment` each time a syscall leaves a
phase (a wait ends when a core takes the call; a run ends when it finishes,
fails or is preempted; a tool, memory or storage call ends). Recording is one
tuple appended to a ``deque`` with a fixed ``maxlen``: no lock, no allocation
beyond the tuple, nothing done for a reader that is not there. Readers (the
dashboard's ``/v1/dashboard/timeline``) walk the buffer from its newest end
and stop at the start of the window they were asked for.

Times are the kernel loop's clock (``loop.time()``), the clock every
:class:`~aios_core.syscalls.Timing` uses.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from aios_core.llm_pool import Flight
    from aios_core.syscalls import AnySyscall

#: segments kept by default: minutes of history for a few hundred busy agents, a few MB at most
DEFAULT_CAPACITY = 50_000


class Phase(StrEnum):
    """What a syscall was doing during a segment (the timeline's colours)."""

    QUEUED = "queued"
    """waiting for its first turn (or a retry) on a core"""
    GENERATING = "generating"
    """running on a core"""
    PREEMPTED = "preempted"
    """waiting after a preemption, its snapshot held by the context manager"""
    TOOL = "tool"
    MEMORY = "memory"
    STORAGE = "storage"


_MANAGED = {"tool": Phase.TOOL, "memory": Phase.MEMORY, "storage": Phase.STORAGE}


class Segment(NamedTuple):
    """One phase of one syscall; ``end`` is None while the phase is still going on.

    The kernel records plain tuples in this field order (building a tuple is
    the whole cost of recording); readers get them as segments.
    """

    agent: str
    program: str
    syscall: str
    phase: Phase
    start: float
    end: float | None
    core: str = ""
    #: tokens generated during a ``generating`` segment
    tokens: int = 0
    #: how a ``generating`` segment ended (stop, length, preempted, error, cancelled, ...) or a managed call ("ok", "error")
    outcome: str = ""
    #: when the segment was recorded (its end, or for a managed call's wait, the end of the whole call)
    at: float = 0.0

    def row(self, origin: float) -> list[Any]:
        """The segment as a JSON row, times in seconds relative to ``origin`` (the reader's "now")."""
        end = None if self.end is None else round(self.end - origin, 4)
        return [self.agent, self.program, self.syscall, self.phase.value, round(self.start - origin, 4), end, self.core, self.tokens, self.outcome]


#: column names of :meth:`Segment.row`, in order
COLUMNS = ("agent", "program", "syscall", "phase", "start", "end", "core", "tokens", "outcome")


def _text(value: Any) -> str:
    """A finish reason or state as plain text, whether it is a string or a string enum."""
    return str(getattr(value, "value", value) or "")


class Timeline:
    """The last ``capacity`` segments of every syscall, oldest first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("a timeline keeps at least one segment")
        self.capacity = capacity
        self._segments: deque[tuple[Any, ...]] = deque(maxlen=capacity)
        #: segments ever recorded (the buffer keeps the last ``capacity``)
        self.recorded = 0

    # ------------------------------------------------------------------ writers (on the kernel loop)

    def waited(self, flight: Flight, now: float) -> None:
        """A core took ``flight``: its wait since it was (re)queued ends now."""
        job = flight.job
        phase = Phase.PREEMPTED if job.preemptions else Phase.QUEUED
        self._segments.append((flight.agent.name, job.program, flight.id, phase, job.enqueued_at, now, "", 0, "", now))
        self.recorded += 1

    def ran(self, flight: Flight, core: str, now: float, outcome: Any) -> None:
        """``flight`` left ``core`` (finished, preempted, failed or cancelled)."""
        job = flight.job
        self._segments.append(
            (flight.agent.name, job.program, flight.id, Phase.GENERATING, flight.run_started, now, core, job.slice_tokens, _text(outcome), now)
        )
        self.recorded += 1

    def managed(self, sc: AnySyscall, error: BaseException | None) -> None:
        """A memory, storage or tool syscall ended: its wait for a worker slot, then its run."""
        timing = sc.timing
        phase = _MANAGED.get(sc.kind)
        if phase is None or timing.queued is None:
            return
        agent, program = sc.agent, sc.program or sc.agent
        end = timing.finished if timing.finished is not None else timing.queued
        started = timing.started if timing.started is not None else end
        if started > timing.queued:
            self._segments.append((agent, program, sc.id, Phase.QUEUED, timing.queued, started, "", 0, "", end))
            self.recorded += 1
        if timing.started is not None:
            self._segments.append((agent, program, sc.id, phase, timing.started, end, "", 0, "error" if error is not None else "ok", end))
            self.recorded += 1

    # ------------------------------------------------------------------ readers

    def recent(self, since: float, *, agent: str | None = None, limit: int | None = None) -> Iterator[Segment]:
        """Segments that ended at or after ``since``, newest first (of ``agent`` only, if given), at most ``limit``.

        The buffer is in recording order, so the walk stops at the first
        segment recorded before ``since`` (nothing older can have ended later).
        """
        count = 0
        # a snapshot of the deque: the kernel loop may append while a reader in another thread iterates
        for raw in reversed(tuple(self._segments)):
            if raw[9] < since:
                return
            if agent is not None and raw[0] != agent:
                continue
            yield Segment._make(raw)
            count += 1
            if limit is not None and count >= limit:
                return

    def __len__(self) -> int:
        return len(self._segments)
