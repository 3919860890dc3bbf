"""Holding a llama-server slot for a program across its tool call, so its next turn finds its KV there.

llama-server ties the conversations it keeps to its slots (``-np``). A request
takes a free slot and keeps only the prefix it shares with what the slot held;
its host-RAM prompt cache saves the rest only when less than half of the slot's
prompt survives. Agents of one application share a long system prompt, so a
request usually keeps more than half of another agent's slot, and that agent's
turns are lost. With as many calls in flight as slots, each new call can only
take the slot just freed: the conversation of the agent that has just finished
a turn, which comes back after its tool call to a slot that no longer holds it
and prefills the whole conversation again. After one of two engines fails, the
survivor serves twice its agents on the same slots, and this recompute sets
how long the run takes (docs/benchmarks.md, "Scale-out").

The kernel knows which program a finished call belongs to and how long that
program pauses between calls. So the core leases the slot to the program for
about two of its typical pauses, and pins every request to a slot with
llama-server's ``id_slot``: the leaseholder's next turn goes back to its slot,
and other calls go to the free slot whose conversation they share most (else the
least recently used one), never to a leased slot. A lease is granted only when
prefilling the conversation again would cost the engine more than the slot
idling for the lease (the engine's measured prefill cost against one slot's
share of its time). Continuum (Li et al., 2025, arXiv 2511.02230) makes the same
trade for vLLM's KV cache as a time-to-live. When the lease runs out, the slot is
free again and the pool is told, so nothing waits on a program that ended.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from aios_core.cores.engine_speed import MovingMean
from aios_core.cores.remote_prefixes import ConversationIndex
from aios_core.syscalls import Message

#: a lease lasts this many of the program's typical pauses between calls (its next call may come a little late)
PAUSES_PER_LEASE = 2.0
#: message prefixes remembered per slot: one conversation, as the slot holds one
SLOT_MEMORY = 256


@dataclass
class _Slot:
    index: int
    busy: bool = False
    #: the program whose conversation the slot holds (the leaseholder while ``lease_until`` is ahead)
    program: str = ""
    lease_until: float = 0.0
    last_used: float = -math.inf
    seen: ConversationIndex = field(default_factory=lambda: ConversationIndex(SLOT_MEMORY))


class PauseClock:
    """How long programs pause between the end of one call and the arrival of the next (their tool calls)."""

    def __init__(self, max_programs: int = 10_000) -> None:
        self.max_programs = max_programs
        self._ended: dict[str, float] = {}
        self._per_program: dict[str, MovingMean] = {}
        self._all = MovingMean()

    def ended(self, program: str, now: float) -> None:
        self._ended[program] = now
        if len(self._ended) > self.max_programs:
            oldest = next(iter(self._ended))
            del self._ended[oldest]
            self._per_program.pop(oldest, None)

    def arrived(self, program: str, at: float) -> None:
        """A call of ``program`` reached the kernel at ``at``: the pause since its last call ended, if there was one."""
        ended = self._ended.pop(program, None)
        if ended is None or at < ended:
            return
        self._per_program.setdefault(program, MovingMean()).add(at - ended)
        self._all.add(at - ended)

    def typical(self, program: str) -> float | None:
        """The program's typical pause; a program not seen pausing yet gets everyone's; None before any pause."""
        own = self._per_program.get(program)
        if own is not None and own.count:
            return own.value
        return self._all.value if self._all.count else None


class SlotLeases:
    """Which of a server's slots is busy, held for a program, or free, and which conversation each holds."""

    def __init__(self, slots: int, max_hold: float) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1 (got {slots})")
        if not (max_hold > 0 and math.isfinite(max_hold)):
            raise ValueError(f"max_hold must be a positive number of seconds (got {max_hold!r})")
        self.max_hold = max_hold
        self._slots = [_Slot(i) for i in range(slots)]
        self.granted = 0
        self.used = 0
        self.expired = 0

    def _leased(self, slot: _Slot, now: float) -> bool:
        return slot.lease_until > now

    def _free_for(self, program: str, now: float) -> list[_Slot]:
        return [s for s in self._slots if not s.busy and (not self._leased(s, now) or (program and s.program == program))]

    def available(self, program: str, now: float) -> bool:
        """Whether a call of ``program`` can take a slot now: one free and not leased to another program."""
        return bool(self._free_for(program, now))

    def leased_to(self, program: str, now: float) -> bool:
        return bool(program) and any(s.program == program and not s.busy and self._leased(s, now) for s in self._slots)

    def holders(self, now: float) -> set[str]:
        return {s.program for s in self._slots if not s.busy and self._leased(s, now)}

    def acquire(self, program: str, messages: Sequence[Message], now: float) -> int | None:
        """The slot a call should be pinned to, marked busy; None when every slot is taken (the server picks then)."""
        free = self._free_for(program, now)
        if not free:
            return None
        mine = [s for s in free if program and s.program == program and self._leased(s, now)]
        if mine:
            slot = mine[0]
            self.used += 1
        else:
            # the slot whose conversation this call continues furthest, else the one idle longest
            slot = max(free, key=lambda s: (s.seen.match(messages), -s.last_used))
        slot.busy, slot.program, slot.lease_until = True, program, 0.0
        return slot.index

    def release(self, index: int, now: float, *, hold: float = 0.0, messages: Sequence[Message] = (), reply: Message | None = None) -> None:
        """The call on slot ``index`` ended; the slot now holds ``messages`` (and ``reply``), leased for ``hold`` seconds."""
        slot = self._slots[index]
        slot.busy = False
        slot.last_used = now
        slot.seen.forget()
        if messages:
            slot.seen.remember(messages, reply)
        if hold > 0 and slot.program:
            slot.lease_until = now + min(hold, self.max_hold)
            self.granted += 1

    def expire(self, now: float) -> bool:
        """Drop the leases that ran out; whether any did (a slot came free for everyone)."""
        ran_out = False
        for s in self._slots:
            if s.lease_until and s.lease_until <= now:
                s.lease_until = 0.0
                self.expired += 1
                ran_out = True
        return ran_out

    def clear(self) -> None:
        """The server lost its slots' contents (restarted): no lease or remembered conversation holds."""
        for s in self._slots:
            s.lease_until = 0.0
            s.program = ""
            s.seen.forget()

    def describe(self) -> dict[str, int]:
        return {"slot_leases_granted": self.granted, "slot_leases_used": self.used, "slot_leases_expired": self.expired}


def lease_seconds(pause: float | None, max_hold: float, *, recompute_seconds: float | None, slots: int) -> float:
    """How long to hold a finished call's slot: about two typical pauses, when recomputing costs more than idling.

    ``recompute_seconds`` is what prefilling the conversation again would take the engine (None: not measured
    yet, so the lease is not priced). Idling one slot of ``slots`` for the lease costs the engine about that
    share of its time; a conversation cheaper to recompute than that is let go.
    """
    hold = max_hold if pause is None else min(max_hold, PAUSES_PER_LEASE * pause)
    if hold <= 0:
        return 0.0
    if recompute_seconds is not None and recompute_seconds < hold / slots:
        return 0.0
    return hold
