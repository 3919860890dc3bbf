"""The kernel end to end on the sim core: scheduling, preemption, bridges, and every bad-input path."""

from __future__ import annotations

import asyncio
import gc
import threading
import tracemalloc

import pytest

from aios_core.cores.sim import SimCore
from aios_core.errors import (
    ContextLengthError,
    CoreError,
    InvalidSyscallError,
    KernelNotRunningError,
    QueueFullError,
    SyscallCancelledError,
    SyscallTimeoutError,
    UnknownAgentError,
    UnknownComponentError,
)
from aios_core.scheduler import FifoScheduler


def llm(agent: str, text: str = "hello", **request):
    return {"kind": "llm", "agent": agent, "request": {"messages": [{"role": "user", "content": text}], **request}}


async def test_chat_fills_timing_and_accounting(make_kernel):
    async with make_kernel() as kernel:
        agent = kernel.agent("alice")
        response = await agent.achat("hi", max_tokens=32, extra={"sim_tokens": 10})
        assert response.finish_reason == "stop"
        assert response.usage.completion_tokens == 10
        assert len(response.content.split()) == 10
        record = kernel.agents.get("alice")
        assert record.syscalls == 1 and record.completion_tokens == 10 and record.in_flight == 0
        sc = agent.llm_syscall("hi", extra={"sim_tokens": 3})
        await kernel.acall(sc)
        t = sc.timing
        assert t.created <= t.queued <= t.started <= t.finished
        assert t.turnaround == pytest.approx(t.waiting + t.service)


@pytest.mark.parametrize("bad", [
    {"kind": "llm", "agent": "a"},  # no request
    {"kind": "llm", "agent": "a", "request": {"messages": []}},
    {"kind": "llm", "agent": "bad name!", "request": {"messages": [{"role": "user", "content": "x"}]}},
    {"kind": "llm", "agent": "a", "request": {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}},
    {"kind": "llm", "agent": "a", "request": {"messages": [{"role": "user", "content": "x"}], "bogus": 1}},
    {"kind": "teleport", "agent": "a"},
    {"kind": "tool", "agent": "a", "calls": []},
    {"kind": "llm", "agent": "a", "request": {"messages": [{"role": "tool", "content": "x"}]}},
    {"kind": "llm", "agent": "a", "request": {"messages": [{"role": "user", "content": "x"}], "tools": [{"name": "t", "parameters": {"type": "string"}}]}},
    "{not json",
])
async def test_malformed_syscalls_are_refused_before_queueing(make_kernel, bad):
    async with make_kernel() as kernel:
        kernel.register_agent("a")
        with pytest.raises(InvalidSyscallError) as info:
            await kernel.acall(bad)
        assert "invalid" in str(info.value)
        # the kernel keeps serving
        assert (await kernel.acall(llm("a"))).finish_reason == "stop"


async def test_unknown_agent_and_unknown_model(make_kernel):
    async with make_kernel() as kernel:
        with pytest.raises(UnknownAgentError, match="register it first"):
            await kernel.acall(llm("ghost"))
        kernel.register_agent("a")
        with pytest.raises(UnknownComponentError, match="no core serves model 'gpt-9'"):
            await kernel.acall(llm("a", model="gpt-9"))
        assert kernel.agents.get("a").failed == 0  # refused before admission
        assert (await kernel.acall(llm("a"))).content


async def test_unknown_core_kind_fails_start_clearly(data_dir):
    from aios_core.config import load_config
    from aios_core.kernel import Kernel

    kernel = Kernel(load_config(cores=[{"kind": "warp-drive"}], data_dir=data_dir, entry_point_plugins=False))
    with pytest.raises(UnknownComponentError, match="no core named 'warp-drive'"):
        await kernel.astart()
    assert not kernel.running


async def test_prompt_longer_than_context_is_refused(make_kernel):
    async with make_kernel(cores=[SimCore(context_length=64)]) as kernel:
        kernel.register_agent("a")
        with pytest.raises(ContextLengthError, match="exceeds the context"):
            await kernel.acall(llm("a", "word " * 200))
        assert kernel.pools["sim"].queued == 0


async def test_round_robin_preemption_resumes_exactly(make_kernel):
    prompts = [f"task {i}" for i in range(12)]

    async def run(scheduler, **options):
        async with make_kernel(cores=[SimCore(max_batch=3, t0=0.0001, a=0.0, b=0.0)], scheduler=scheduler, scheduler_options=options) as kernel:
            agents = [kernel.agent(f"a{i}") for i in range(len(prompts))]
            responses = await asyncio.gather(*[a.achat(p, max_tokens=200, extra={"sim_tokens": 40}) for a, p in zip(agents, prompts)])
            return [r.content for r in responses], kernel.context.stats.saved, kernel.stats()

    baseline, _, _ = await run("fifo")
    preempted, saved, stats = await run("rr", quantum=4)
    assert saved > 10  # really preempted, many times
    assert preempted == baseline  # and resumed without losing or changing a token
    assert stats["snapshots"]["snapshots_held"] == 0


async def test_streaming_yields_deltas_then_the_full_response(make_kernel):
    async with make_kernel(scheduler="rr", scheduler_options={"quantum": 2}) as kernel:
        agent = kernel.agent("s")
        others = [asyncio.create_task(kernel.agent(f"o{i}").achat("x", extra={"sim_tokens": 30})) for i in range(20)]
        pieces = [p async for p in agent.astream("stream please", extra={"sim_tokens": 25}, max_tokens=100)]
        final = pieces[-1].response
        assert final is not None and final.usage.completion_tokens == 25
        assert "".join(p.delta for p in pieces) == final.content
        await asyncio.gather(*others)


async def test_tool_offer_yields_schema_valid_tool_call(make_kernel):
    async with make_kernel() as kernel:
        tools = [{"name": "add", "description": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}]
        r = await kernel.agent("t").achat("add 1 and 2", tools=tools, tool_choice="required")
        assert r.finish_reason == "tool_calls" and r.content is None
        assert r.tool_calls[0].name == "add" and set(r.tool_calls[0].arguments) == {"a", "b"}


async def test_caller_cancellation_mid_generation_frees_the_slot(make_kernel):
    async with make_kernel(cores=[SimCore(max_batch=1, t0=0.002, a=0.0, b=0.0)]) as kernel:
        agent = kernel.agent("c")
        task = asyncio.create_task(agent.achat("long", max_tokens=5000, extra={"sim_tokens": 5000}))
        while kernel.pools["sim"].running == 0:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the single slot is free again: the next request runs
        r = await kernel.agent("d").achat("short", extra={"sim_tokens": 3})
        assert r.usage.completion_tokens == 3
        assert kernel.pools["sim"].running == 0 and kernel.cores["sim"].running() == 0


async def test_timeout_cancels_queued_and_running_syscalls(make_kernel):
    async with make_kernel(cores=[SimCore(max_batch=1, t0=0.002, a=0.0, b=0.0)]) as kernel:
        a, b = kernel.agent("a"), kernel.agent("b")
        long = asyncio.create_task(a.achat("x", max_tokens=5000, extra={"sim_tokens": 5000}, timeout=0.2))
        queued = asyncio.create_task(b.achat("y", extra={"sim_tokens": 3}, timeout=0.05))
        with pytest.raises(SyscallTimeoutError):
            await queued
        with pytest.raises(SyscallTimeoutError, match="timeout of 0.2"):
            await long
        # the slot the timed-out generation held is free again, and the failure is accounted to its agent
        assert (await b.achat("z", extra={"sim_tokens": 2})).usage.completion_tokens == 2
        assert kernel.agents.get("a").failed == 1 and kernel.agents.get("a").in_flight == 0


class ExplodingScheduler(FifoScheduler):
    name = "exploding"

    def pop(self, now):
        raise RuntimeError("policy bug")


async def test_a_scheduler_that_raises_falls_back_to_fifo_and_is_reported(make_kernel):
    async with make_kernel(scheduler=ExplodingScheduler()) as kernel:
        responses = await asyncio.gather(*[kernel.agent(f"a{i}").achat("x", extra={"sim_tokens": 5}) for i in range(5)])
        assert all(r.usage.completion_tokens == 5 for r in responses)
        assert kernel.pools["sim"].scheduler.name == "fifo"
        assert any("policy bug" in e.message for e in kernel.plugins.errors)


class FlakyCore(SimCore):
    """Fails whole steps on demand, as an engine that crashes mid-request would."""

    def __init__(self, fail_steps: int, **kw):
        super().__init__(**kw)
        self.fail_steps = fail_steps

    async def _step(self, seqs):
        if self.fail_steps > 0:
            self.fail_steps -= 1
            raise RuntimeError("engine crashed")
        return await super()._step(seqs)


async def test_a_core_that_dies_mid_request_is_retried_then_reported(make_kernel):
    async with make_kernel(cores=[FlakyCore(fail_steps=1, t0=0.0001)]) as kernel:
        r = await kernel.agent("a").achat("x", extra={"sim_tokens": 4})
        assert r.usage.completion_tokens == 4  # retried transparently
    async with make_kernel(cores=[FlakyCore(fail_steps=100, t0=0.0001)], max_retries=1) as kernel:
        with pytest.raises(CoreError, match="engine crashed"):
            await kernel.agent("a").achat("x")
        kernel.cores["sim"].fail_steps = 0
        assert (await kernel.agent("b").achat("x", extra={"sim_tokens": 2})).usage.completion_tokens == 2


async def test_a_retry_goes_to_another_core_of_the_model_not_back_to_the_one_that_failed(make_kernel):
    # both cores serve one model; the broken one is listed first and stays idle, so load alone would pick it again
    broken = FlakyCore(name="broken", model="m", fail_steps=10**6, t0=0.0001, max_batch=1)
    steady = SimCore(name="steady", model="m", t0=0.002, max_batch=1)
    async with make_kernel(cores=[broken, steady], max_retries=1) as kernel:
        responses = await asyncio.gather(*[kernel.agent(f"a{i}").achat("x", model="m", extra={"sim_tokens": 3}) for i in range(4)])
        assert [r.core for r in responses] == ["steady"] * 4
        assert all(r.usage.completion_tokens == 3 for r in responses)
        pool = next(iter(kernel.pools.values()))
        assert pool.failed == 0 and pool.completed == 4


class DyingCore(SimCore):
    """An engine whose first step waits for ``kill`` and fails, as a process killed under a running call."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.dying = asyncio.Event()
        self.kill = asyncio.Event()

    def healthy(self) -> bool:
        return not self.kill.is_set()

    async def _step(self, seqs):
        self.dying.set()
        await self.kill.wait()
        raise RuntimeError("engine killed")


async def test_a_moved_call_that_times_out_while_waiting_leaves_no_trace(make_kernel):
    # its engine died under it; moved, it waits in the queue for the busy survivor until its timeout
    doomed = DyingCore(name="doomed", model="m", t0=0.001, max_batch=1)
    survivor = SimCore(name="survivor", model="m", t0=0.002, max_batch=1)
    async with make_kernel(cores=[doomed, survivor], scheduler="plas", max_retries=2) as kernel:
        pool = next(iter(kernel.pools.values()))
        moved = asyncio.create_task(kernel.agent("m").achat("x", model="m", extra={"sim_tokens": 3}, timeout=0.1))
        await asyncio.wait_for(doomed.dying.wait(), 5)
        busy = asyncio.create_task(kernel.agent("b").achat("y", model="m", max_tokens=400, extra={"sim_tokens": 400}))
        while survivor.running() < 1:
            await asyncio.sleep(0.001)
        doomed.kill.set()  # the call moves, and waits for the survivor, busy for 0.8 s
        with pytest.raises(SyscallTimeoutError):
            await moved
        assert pool.queued == 0
        assert (await busy).usage.completion_tokens == 400
        assert (await kernel.agent("c").achat("z", model="m", extra={"sim_tokens": 2})).core == "survivor"
        assert kernel.agents.get("m").failed == 1 and kernel.agents.get("m").in_flight == 0


async def test_a_failing_core_does_not_stop_another_model(make_kernel):
    good = SimCore(name="good", model="good", t0=0.0001)
    bad = FlakyCore(name="bad", model="bad", fail_steps=10**6, t0=0.0001)
    async with make_kernel(cores=[good, bad], max_retries=0) as kernel:
        agent = kernel.agent("a")
        results = await asyncio.gather(
            agent.achat("x", model="bad"), agent.achat("y", model="good", extra={"sim_tokens": 3}), return_exceptions=True
        )
        assert isinstance(results[0], CoreError)
        assert results[1].usage.completion_tokens == 3


async def test_queue_bound_gives_back_pressure(make_kernel):
    async with make_kernel(cores=[SimCore(max_batch=1, t0=0.001)], max_queued=5) as kernel:
        agent = kernel.agent("a")
        tasks = [asyncio.create_task(agent.achat("x", extra={"sim_tokens": 2})) for _ in range(7)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(r, QueueFullError) for r in results) == 1
        assert sum(not isinstance(r, Exception) for r in results) == 6


async def test_ten_thousand_queued_syscalls_do_not_grow_memory(make_kernel):
    from aios_core.timeline import Timeline

    kernel = make_kernel(cores=[SimCore(max_batch=64, t0=0.0, a=0.0, b=0.0)], scheduler="plas")
    # the dashboard's timeline is a ring buffer, bounded by design; a small one is full after the first wave,
    # so that what is measured below is growth per syscall, not a buffer still filling up to its bound
    kernel.timeline = Timeline(capacity=1_000)
    async with kernel:
        agents = [kernel.agent(f"a{i}") for i in range(100)]

        async def wave():
            await asyncio.gather(*[agents[i % 100].achat("x", max_tokens=4, extra={"sim_tokens": 2}) for i in range(10_000)])

        async def settle():
            # callbacks of the finished gather (and its 10,000 results) may still be scheduled: let the loop run them
            for _ in range(5):
                await asyncio.sleep(0)
            gc.collect()

        # the first waves grow hash tables and free lists to their high-water mark; later waves must not add
        await wave()
        await settle()
        tracemalloc.start()
        await wave()
        await settle()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2):
            await wave()
            await settle()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert kernel.pools["sim"].completed == 40_000
        assert after - before < 512 * 1024, f"memory grew by {after - before} bytes over 20,000 more syscalls"


async def test_stop_cancels_in_flight_work_with_a_clear_error(make_kernel):
    kernel = make_kernel(cores=[SimCore(max_batch=1, t0=0.002)])
    await kernel.astart()
    agent = kernel.agent("a")
    tasks = [asyncio.create_task(agent.achat("x", max_tokens=8000, extra={"sim_tokens": 8000})) for _ in range(3)]
    await asyncio.sleep(0.02)
    await kernel.astop(grace=0.01)
    for t in tasks:
        with pytest.raises(SyscallCancelledError, match="stopping"):
            await t
    with pytest.raises(KernelNotRunningError):
        await kernel.acall(llm("a"))


def test_sync_bridge_from_many_threads_and_a_foreign_loop(make_kernel):
    kernel = make_kernel(scheduler="rr", cores=[SimCore(t0=0.0005)]).start()
    try:
        results: list[str] = []

        def worker(i: int) -> None:
            agent = kernel.agent(f"t{i}")
            results.append(agent.chat("hello", extra={"sim_tokens": 5}).content)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8 and all(len(r.split()) == 5 for r in results)

        async def from_other_loop():
            agent = kernel.agent("foreign")
            pieces = [p async for p in agent.astream("hi", extra={"sim_tokens": 6})]
            return await agent.achat("again", extra={"sim_tokens": 2}), pieces

        response, pieces = asyncio.run(from_other_loop())
        assert response.usage.completion_tokens == 2 and pieces[-1].response.usage.completion_tokens == 6
        streamed = list(kernel.agent("sync-stream").stream("hi", extra={"sim_tokens": 4}))
        assert streamed[-1].response is not None
    finally:
        kernel.stop()
    with pytest.raises(KernelNotRunningError):
        kernel.call(llm("t0"))


async def test_priority_and_plas_schedulers_run_through_the_kernel(make_kernel):
    for policy in ("priority", "plas", "srpt", "rr", "fifo"):
        async with make_kernel(scheduler=policy, cores=[SimCore(max_batch=2, t0=0.0001)]) as kernel:
            rs = await asyncio.gather(*[kernel.agent(f"a{i}").achat("x", extra={"sim_tokens": 20}, hint_tokens=20) for i in range(6)])
            assert [r.usage.completion_tokens for r in rs] == [20] * 6, policy


def test_syscall_ids_are_unique_hex_and_a_forked_child_draws_its_own_prefix():
    import multiprocessing
    import re

    from aios_core.syscalls import new_id

    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply(new_id)
    assert child[:16] != next(iter(ids))[:16]


def test_patcher_hands_back_what_was_there_and_restores_it_exactly():
    from aios_core.patching import Patcher

    class Base:
        def greet(self):
            return "base"

    class Child(Base):
        def own(self):
            return "own"

    own, inherited = Child.__dict__["own"], Base.__dict__["greet"]
    p = Patcher()
    assert p.replace(Child, "own", lambda self: "patched") is own
    assert p.replace(Child, "greet", lambda self: "patched") is inherited  # found on Base, not the replacement
    assert Child().greet() == "patched" == Child().own()
    p.restore()
    assert Child.__dict__["own"] is own and "greet" not in Child.__dict__ and Child().greet() == "base"
