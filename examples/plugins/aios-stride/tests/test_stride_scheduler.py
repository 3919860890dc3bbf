"""The stride policy on its own (pure, no model) and inside a kernel on the sim core."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aios_stride import StrideScheduler

from aios_core.clock import run_virtual
from aios_core.cores.sim import SimCore
from aios_core.errors import ConfigError
from aios_core.kernel import Kernel
from aios_core.plugins import PluginHost
from aios_core.scheduler.base import Job


def serve(policy: StrideScheduler, steps: int, tokens: int = 8) -> Counter[str]:
    """A single-slot server: run whatever the policy picks for ``tokens`` tokens, then the program asks again."""
    served: Counter[str] = Counter()
    for _ in range(steps):
        job = policy.pop(0.0)
        assert job is not None
        policy.on_dispatch(job, 0.0)
        policy.on_tokens(job, tokens)
        policy.on_release(job, 0.0)
        policy.on_finish(job)
        served[job.program] += tokens
        nxt = Job(id=f"{job.program}-{served[job.program]}", agent=job.program, program=job.program)
        policy.on_arrival(nxt)
        policy.push(nxt, 0.0)
    return served


def backlog(policy: StrideScheduler, *programs: str) -> None:
    for program in programs:
        job = Job(id=f"{program}-0", agent=program, program=program)
        policy.on_arrival(job)
        policy.push(job, 0.0)


def test_backlogged_programs_share_tokens_by_tickets():
    policy = StrideScheduler(tickets={"planner": 300, "worker": 100}, prefill_weight=0.0)
    backlog(policy, "worker", "planner")
    served = serve(policy, 400)
    assert served["planner"] / served["worker"] == pytest.approx(3.0, rel=0.02)


def test_a_late_program_gets_no_credit_for_its_absence():
    policy = StrideScheduler(prefill_weight=0.0)
    backlog(policy, "a", "b")
    serve(policy, 100)
    backlog(policy, "late")
    served = serve(policy, 90)
    # equal tickets: from its arrival on the newcomer gets a third, not everything until it "catches up"
    assert served["late"] == pytest.approx(served["a"], abs=8)
    assert served["late"] == pytest.approx(served["b"], abs=8)


def test_jobs_of_one_program_run_in_arrival_order_and_a_preempted_job_goes_first():
    policy = StrideScheduler()
    first, second = Job(id="1", agent="p", program="p"), Job(id="2", agent="p", program="p")
    for job in (first, second):
        policy.on_arrival(job)
        policy.push(job, 0.0)
    assert policy.pop(0.0) is first
    first.preemptions = 1
    policy.push(first, 0.0)
    assert [policy.pop(0.0), policy.pop(0.0), policy.pop(0.0)] == [first, second, None]


def test_preempts_only_after_the_quantum_and_only_for_a_program_behind_its_share():
    policy = StrideScheduler(quantum=16, prefill_weight=0.0)
    running = Job(id="r", agent="hog", program="hog")
    policy.on_arrival(running)
    policy.push(running, 0.0)
    assert policy.pop(0.0) is running
    policy.on_dispatch(running, 0.0)
    backlog(policy, "light")
    policy.on_tokens(running, 15)
    assert not policy.should_preempt(running, 0.0), "inside its quantum"
    policy.on_tokens(running, 1)
    assert policy.should_preempt(running, 0.0)
    assert policy.victim_rank(running, 0.0) > (0.0,)


def test_removed_jobs_leave_the_queue():
    policy = StrideScheduler()
    backlog(policy, "a", "b")
    job = policy.peek(0.0)
    assert policy.remove(job) and len(policy) == 1
    assert not policy.remove(job)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"tickets": {"worker": 0}}, "scheduler_options.tickets.worker"),
        ({"quantum": 0}, "scheduler_options.quantum"),
        ({"default_tickets": -5}, "scheduler_options.default_tickets"),
    ],
)
def test_bad_options_name_the_offending_key(options, key):
    with pytest.raises(ConfigError, match=key):
        StrideScheduler(**options)


def test_the_entry_point_registers_the_policy():
    host = PluginHost()
    assert host.get("schedulers", "stride") is StrideScheduler
    [stride] = [p for p in host.report()["plugins"] if p["name"] == "stride"]
    assert stride["origin"] == "entry point aios-stride 0.1.0"
    assert stride["contributes"] == {"schedulers": ["stride"]}


async def _shares_in_a_kernel(scheduler: str, tmp_path) -> Counter[str]:
    """Two backlogged programs on a one-slot sim core: tokens each has received when the first one is done."""
    core = SimCore(t0=0.01, a=0.0, b=0.0, max_batch=1, default_tokens=(32, 32))
    options = {"tickets": {"planner": 300, "worker": 100}, "quantum": 8} if scheduler == "stride" else {}
    async with Kernel(cores=[core], scheduler=scheduler, scheduler_options=options, data_dir=tmp_path, entry_point_plugins=True) as kernel:
        received: Counter[str] = Counter()

        async def ask(agent, i: int) -> None:
            reply = await agent.achat(f"step {i} of {agent.name}", max_tokens=32)
            received[agent.name] += reply.usage.completion_tokens

        planner, worker = kernel.agent("planner"), kernel.agent("worker")
        tasks = [asyncio.create_task(ask(a, i)) for i in range(12) for a in (worker, planner)]
        await asyncio.gather(*tasks[1::2])  # the planner's requests
        snapshot = Counter(received)
        await asyncio.gather(*tasks)
        assert kernel.stats()["pools"]["sim"]["scheduler"] == scheduler
        return snapshot


def test_through_the_kernel_the_planner_gets_three_times_the_worker_share(tmp_path):
    stride = run_virtual(_shares_in_a_kernel("stride", tmp_path / "stride"))
    fifo = run_virtual(_shares_in_a_kernel("fifo", tmp_path / "fifo"))
    assert stride["planner"] == 12 * 32
    assert stride["planner"] / max(1, stride["worker"]) >= 2.5, stride
    assert fifo["worker"] >= fifo["planner"] - 32, "fifo interleaves the arrivals: no program is favoured"


def test_bad_options_in_the_kernel_config_fail_at_start_with_the_key(tmp_path):
    kernel = Kernel(cores=[SimCore()], scheduler="stride", scheduler_options={"tickets": {"x": "many"}}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="scheduler_options.tickets.x"):
        kernel.start()
    assert not kernel.running
