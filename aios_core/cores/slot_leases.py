"""Holding room on a llama-server for a program across its tool call, so its next turn finds its KV.

llama-server (the version built here) keeps conversations in its slots (``-np``)
and, with ``--kv-unified``, saves idle slots to its host-RAM prompt cache and
clears them whenever it starts a task. A request takes the free slot whose
prompt shares more than 10 % of its own; only when it would keep less than half
of that slot's prompt are the slot saved and the request's own conversation
loaded from the RAM cache. Agents of one application share a long system
prompt, so the slot just freed (not yet saved) is usually such a slot: the next
call takes it, overwrites the tail of the conversation it held, and prefills
its own conversation's tail too. With as many calls in flight as slots, the
slot just freed is the only free one, and it belongs to the agent now on its
tool call. After one of two engines fails, the survivor serves twice its agents
on the same slots, and this recompute set how long the scale-out study's run
took (docs/benchmarks.md, "Scale-out").

The kernel knows which program a finished call belongs to and how long that
program pauses between calls. So the core holds the slot's room for the program
(a lease) for about two of its typical pauses: no other program's call starts
there meanwhile, and the program's next turn finds its conversation in the slot
or, once the server saved it, in the RAM cache. A lease is granted only when
prefilling the conversation again would cost the engine more than the slot
idling for the lease (the engine's measured prefill cost against one slot's
share of its time). When the lease runs out, the room is free again and the pool
is told, so nothing waits long on a program that ended. Held room keeps the
scheduler's next call out for at most :data:`HELD_OUT_LEASES` caps from the first
time it does, or until the scheduler judges that call starving (``LLMPool._room_past_holds``,
:meth:`SlotLeases.make_room`): a program that keeps coming back cannot keep its slot from the queue. Continuum (Li et al.,
2025, arXiv 2511.02230) makes the same trade for vLLM's KV cache, as a
time-to-live with program-level first come first served.

Requests are not pinned to slots (llama-server's ``id_slot``): a request pinned
to a slot the server has cleared is prefilled from scratch, because that path
never consults the RAM cache. Pinning was measured slower (docs/benchmarks.md,
"Slots held across tool calls").
"""

from __future__ import annotations

import math
from collections import OrderedDict

from aios_core.cores.engine_speed import ProgramMeans

#: a lease lasts this many of the program's typical pauses between calls (its next call may come a little late)
PAUSES_PER_LEASE = 2.0

#: held room keeps a waiting call out for at most this many lease caps (a minute at ``keep_slots`` 5): long enough
#: that agents which end after a few turns keep their slots through an overload (after an engine failed, the
#: scale-out study's survivor serves its own agents for 30-60 s before the moved ones fit; a bound of one cap broke
#: their leases and measured slower, docs/benchmarks.md), short enough that an agent that never ends cannot keep a
#: slot from the queue for more than a minute
HELD_OUT_LEASES = 12


class PauseClock:
    """How long programs pause between the end of one call and the arrival of the next (their tool calls)."""

    def __init__(self, max_programs: int = 10_000) -> None:
        self.max_programs = max_programs
        # least recently touched first: a long-running kernel forgets the programs it has not seen for longest
        self._ended: OrderedDict[str, float] = OrderedDict()
        self._pauses = ProgramMeans(max_programs)

    def ended(self, program: str, now: float) -> None:
        self._ended[program] = now
        self._ended.move_to_end(program)
        while len(self._ended) > self.max_programs:
            self._ended.popitem(last=False)

    def arrived(self, program: str, at: float) -> None:
        """A call of ``program`` reached the kernel at ``at``: the pause since its last call ended, if there was one."""
        ended = self._ended.pop(program, None)
        if ended is None or at < ended:
            return
        self._pauses.add(program, at - ended)

    def forget(self, program: str) -> None:
        """The program ended: no pause of it is coming."""
        self._ended.pop(program, None)
        self._pauses.forget(program)

    def typical(self, program: str) -> float | None:
        """The program's typical pause; a program not seen pausing yet gets everyone's; None before any pause."""
        return self._pauses.typical(program)


class SlotLeases:
    """Room on a server held for programs on their tool calls: a held slot is taken by no other program's call."""

    def __init__(self, slots: int, max_hold: float) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1 (got {slots})")
        if not (max_hold > 0 and math.isfinite(max_hold)):
            raise ValueError(f"max_hold must be a positive number of seconds (got {max_hold!r})")
        self.slots = slots
        self.max_hold = max_hold
        self._until: dict[str, float] = {}
        self.granted = 0
        self.used = 0
        self.expired = 0
        #: leases let go early for a call they had kept out for as long as a lease may last
        self.yielded = 0
        #: leases let go because the program's next call was cheaper on another server
        self.moved = 0

    @property
    def held_out_bound(self) -> float:
        """Seconds held room may keep a waiting call out, from the first time it does."""
        return self.max_hold * HELD_OUT_LEASES

    def _held(self, now: float) -> dict[str, float]:
        return {p: t for p, t in self._until.items() if t > now}

    def available(self, program: str, busy: int, now: float) -> bool:
        """Whether a call of ``program`` may start beside ``busy`` running ones: a free slot not held for another program."""
        held = self._held(now)
        others = len(held) - (1 if program in held else 0)
        return busy + others < self.slots

    def leased_to(self, program: str, now: float) -> bool:
        return self._until.get(program, 0.0) > now

    def holders(self, now: float) -> set[str]:
        return set(self._held(now))

    def drop(self, program: str, now: float) -> bool:
        """The program ended: let its held room go; whether it held any."""
        return self._until.pop(program, 0.0) > now

    def move_away(self, program: str, now: float) -> None:
        """The program's next call runs on another server (a cheaper route): its room here is no longer held."""
        if self.drop(program, now):
            self.moved += 1

    def take(self, program: str, now: float) -> None:
        """A call of ``program`` starts: the slot held for it is in use again."""
        if self._until.pop(program, 0.0) > now:
            self.used += 1

    def make_room(self, program: str, busy: int, now: float) -> bool:
        """Let held room go, the leases that would run out soonest first, until a call of ``program`` fits beside ``busy``.

        For a call that held room kept out for as long as it may (the pool's bound); whether it fits now. With
        every slot running a call no lease can help, and none is let go.
        """
        if busy >= self.slots:
            return False
        while not self.available(program, busy, now):
            held = {p: t for p, t in self._held(now).items() if p != program}
            if not held:
                return False
            del self._until[min(held, key=held.__getitem__)]
            self.yielded += 1
        return True

    def grant(self, program: str, now: float, hold: float) -> None:
        """Hold a slot for ``program``'s next call for ``hold`` seconds (at most ``max_hold``)."""
        if program and hold > 0:
            self._until[program] = now + min(hold, self.max_hold)
            self.granted += 1

    def expire(self, now: float) -> bool:
        """Drop the leases that ran out; whether any did (a slot came free for everyone)."""
        ran_out = [p for p, t in self._until.items() if t <= now]
        for p in ran_out:
            del self._until[p]
        self.expired += len(ran_out)
        return bool(ran_out)

    def clear(self) -> None:
        """The server lost what it held (restarted): nothing is worth holding room for."""
        self._until.clear()

    def describe(self) -> dict[str, int]:
        return {"slot_leases_granted": self.granted, "slot_leases_used": self.used, "slot_leases_expired": self.expired,
                "slot_leases_yielded": self.yielded, "slot_leases_moved": self.moved}


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
