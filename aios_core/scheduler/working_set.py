"""Load control for the KV cache: start a large program only while the conversations in flight still fit.

An engine's prefix cache keeps each program's conversation between its calls,
so that the next call prefills only its new message. That holds only while
the conversations of every program in flight fit in the KV cache. Serve more
programs at once than fit, and each conversation is evicted before its
program comes back: every call prefills its whole conversation again, and a
long prefill stalls every sequence of the batch. This is thrashing, as in a
paged memory that runs more processes than their working sets fit (Denning,
"The working set model for program behavior", 1968), and the cure is the
same: load control. A program that has not started waits while the
conversations in flight, plus the one it is expected to grow, would exceed a
budget; programs already in flight go on.

A program's footprint is learned per application (the same system prompt and
tools, see ``LLMRequest.application``): the mean conversation its last
``WINDOW`` ended programs reached (the largest one tracks the long tail and
held short programs of heavy-tailed applications for nothing). Programs of an
application whose footprint is known and small (``small_share`` of the
budget) are never held: they come and go within a few calls, and holding a
short chat behind long coding programs would cost the mean far more than its
few cells. Until one of its programs has ended, an application's footprint is
unknown and counts as large, with the largest conversation seen so far as its
size. An application whose follow-up calls do not carry the conversation so
far (each sends its instructions and a fresh input) keeps nothing between
calls: its programs neither count in flight nor wait.

The policy that uses it decides what "in flight" is (see
:meth:`aios_core.scheduler.plas.PLASScheduler.in_flight_context`) and never
lets it idle the engine: with nothing running, the best program starts
whatever the budget says.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

#: ended programs an application's footprint averages over (a moving mean, so that it follows a changing application)
WINDOW = 20


@dataclass(slots=True)
class Footprint:
    """What programs of one application keep in the KV cache between their calls."""

    #: tokens of conversation a program reaches: the mean over ended ones, the largest so far while none has ended
    size: float = 0.0
    ended: int = 0
    #: share of follow-up calls whose prompt carried the conversation so far (None: no follow-up seen yet)
    continues: float | None = None

    @property
    def keeps(self) -> bool:
        """Whether its programs' next calls reuse their conversation (else the cache keeps nothing of theirs)."""
        return self.continues is None or self.continues >= 0.5


class WorkingSet:
    """The KV budget of the conversations in flight and each application's expected footprint in it.

    Without a budget nothing is learnt: nothing would read it, and :meth:`grew` is called at every token.
    """

    def __init__(self, *, share: float | None, small_share: float, max_applications: int) -> None:
        """``share``: the part of the KV cells that conversations in flight may hold (None: no load control)."""
        if share is not None and not (0.0 < share <= 1.0):
            raise ValueError(f"kv_share must be in (0, 1] or None, got {share!r}")
        if not (0.0 <= small_share < 1.0) or not math.isfinite(small_share):
            raise ValueError(f"small_share must be in [0, 1), got {small_share!r}")
        self.share = share
        self.small_share = small_share
        self.max_applications = max_applications
        #: tokens the conversations in flight may hold (None: no load control: the cells are unknown or it is off)
        self.budget: float | None = None
        self._footprints: OrderedDict[str | None, Footprint] = OrderedDict()

    def set_cells(self, cells: int | None) -> None:
        """The KV cells the engines keep conversations in (None: unknown, e.g. a remote server not configured)."""
        self.budget = self.share * cells if self.share is not None and cells is not None and cells > 0 else None

    @property
    def active(self) -> bool:
        return self.budget is not None

    def _footprint(self, application: str | None) -> Footprint:
        fp = self._footprints.get(application)
        if fp is None:
            fp = self._footprints[application] = Footprint()
            if len(self._footprints) > self.max_applications:
                self._footprints.popitem(last=False)
        self._footprints.move_to_end(application)
        return fp

    def followed_up(self, application: str | None, *, carried: bool) -> None:
        """A program of ``application`` made another call; ``carried``: its prompt held the conversation so far."""
        if self.budget is None:
            return
        fp = self._footprint(application)
        value = 1.0 if carried else 0.0
        fp.continues = value if fp.continues is None else fp.continues + (value - fp.continues) / WINDOW

    def grew(self, application: str | None, context: int) -> None:
        """A program of ``application`` in flight now holds ``context`` tokens of conversation."""
        if self.budget is None:
            return
        fp = self._footprint(application)
        if not fp.ended and context > fp.size:
            fp.size = float(context)

    def ended(self, application: str | None, context: int) -> None:
        """A program of ``application`` ended with ``context`` tokens of conversation."""
        if self.budget is None:
            return
        fp = self._footprint(application)
        fp.ended += 1
        fp.size = float(context) if fp.ended == 1 else fp.size + (context - fp.size) / min(fp.ended, WINDOW)

    def keeps(self, application: str | None) -> bool:
        """Whether programs of ``application`` keep a conversation in the cache between calls (unknown: yes)."""
        fp = self._footprints.get(application)
        return fp is None or fp.keeps

    def footprint(self, application: str | None) -> tuple[float, bool]:
        """Tokens a new program of ``application`` is expected to keep, and whether that is known (one has ended)."""
        fp = self._footprints.get(application)
        if fp is None:
            return 0.0, False
        if not fp.keeps:
            return 0.0, True
        return fp.size, fp.ended > 0

    def admits(self, application: str | None, in_flight: float) -> bool:
        """Whether a new program of ``application`` may start while conversations of ``in_flight`` tokens are kept."""
        if self.budget is None:
            return True
        size, known = self.footprint(application)
        if known and size <= self.small_share * self.budget:
            return True
        # with nothing kept, even a program larger than the budget starts: it cannot evict anyone
        return in_flight <= 0 or in_flight + size <= self.budget
