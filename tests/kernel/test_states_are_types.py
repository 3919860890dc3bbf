"""Kernel state, flight state, finish reasons and an engine sequence's phase are enums with the old words on the wire.

Mutations caught: a state set to a misspelt string (it would never match) -> the `is` checks; an unknown finish
reason accepted from a core (a caller would get it as a valid OpenAI reason) -> test_unknown_finish_*; a
preemption asked of a finished or cancelled sequence overriding it -> test_engine_sequence_*.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from aios_core.cores.base import Chunk, Finish, Generation
from aios_core.cores.batching import EngineSeq, SeqAsk, SeqPhase
from aios_core.cores.sim import SimCore
from aios_core.kernel import KernelState
from aios_core.llm_pool import FlightState
from aios_core.syscalls import LLMRequest


async def test_kernel_state_walks_its_lifecycle_and_reads_as_words(make_kernel):
    kernel = make_kernel()
    assert kernel._state is KernelState.NEW
    async with kernel:
        stats = kernel.stats()
        assert stats["state"] is KernelState.RUNNING and json.loads(json.dumps(stats))["state"] == "running"
    assert kernel._state is KernelState.STOPPED and not kernel.running
    await kernel.astart()  # a stopped kernel starts again
    assert kernel.running
    await kernel.astop()


async def test_flight_state_while_queued_running_and_done(make_kernel):
    async with make_kernel(cores=[SimCore(max_batch=1, t0=0.001, a=0.0, b=0.0)]) as kernel:
        first = asyncio.ensure_future(kernel.agent("a").achat("x", max_tokens=50, extra={"sim_tokens": 50}))
        second = asyncio.ensure_future(kernel.agent("b").achat("y", max_tokens=2, extra={"sim_tokens": 2}))
        pool = kernel.pools["sim"]
        while pool.running == 0 or pool.queued == 0:
            await asyncio.sleep(0)
        states = sorted(f.state for f in pool.flights())
        assert states == [FlightState.QUEUED, FlightState.RUNNING] and states == ["queued", "running"]
        await asyncio.gather(first, second)
        assert pool.flights() == []


def test_unknown_finish_reason_from_a_core_is_refused_where_it_is_made():
    assert Chunk(finish_reason="stop").finish_reason is Finish.STOP
    assert Finish.TOOL_CALLS.completed and not Finish.PREEMPTED.completed
    with pytest.raises(ValueError):
        Chunk(finish_reason="exploded")  # type: ignore[arg-type]


async def test_engine_sequence_phase_and_requests():
    seq = EngineSeq(gen=Generation(id="g", request=LLMRequest(messages=[{"role": "user", "content": "x"}])), out=asyncio.Queue())
    assert seq.phase is SeqPhase.WAITING and not seq.prefilled
    seq.prefilled = True
    assert seq.phase is SeqPhase.HOLDING
    seq.ask_cancel()
    seq.ask_preempt()  # a cancel is not turned back into a preemption
    assert seq.ask is SeqAsk.CANCEL and seq.want_cancel and not seq.want_preempt
    seq.end(Finish.CANCELLED)
    seq.prefilled = True  # engines may still say so; a finished sequence stays finished
    assert seq.done and seq.finish is Finish.CANCELLED
