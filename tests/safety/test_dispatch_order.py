"""Exact dispatch order through the kernel for the priority, PLAS and SRPT policies.

The policies have unit tests of their own (tests/kernel/test_scheduler_policies.py);
these check that the kernel hands each policy what it needs (the agent's
priority, its program, the caller's length hint) and obeys its answer. One
slot is held busy (a one-slot sim core, preemption off) while jobs with known
priorities / programs / hints queue behind it, in a known order; the order of
``timing.started`` then has to be the policy's order exactly. Everything runs
on virtual time, so the order is the same on any machine.

Mutations these catch (each leaves every token count right, which is all the
older kernel tests checked):
- the kernel drops the caller's priority (every job priority 0)  -> priority test
- PLAS keyed by call instead of by program, or serving a level in call order
  instead of program-arrival order                               -> PLAS test
- the kernel drops hint_tokens, or SRPT ignores the length       -> SRPT test
"""

from __future__ import annotations

import asyncio
from typing import Any

from aios_core.clock import run_virtual
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel


async def _started_order(kernel: Kernel, jobs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Hold the one slot with a blocker, queue ``jobs`` (label, chat options) in order, return labels by start time."""
    pool = kernel.pools["sim"]
    blocker = asyncio.create_task(kernel.agent("blocker").achat("hold the slot", max_tokens=64, extra={"sim_tokens": 64}))
    while pool.running == 0:
        await asyncio.sleep(0)
    syscalls = []
    tasks = []
    for i, (label, options) in enumerate(jobs):
        agent = kernel.agent(options.pop("agent", label), **options.pop("register", {}))
        sc = agent.llm_syscall(f"job {label}", max_tokens=16, extra={"sim_tokens": 4}, **options)
        syscalls.append((label, sc))
        tasks.append(asyncio.create_task(kernel.acall(sc)))
        while pool.queued < i + 1:  # queued in exactly this order
            await asyncio.sleep(0)
        await asyncio.sleep(0.0001)  # and at distinct (virtual) times, so that arrival order is unambiguous
    assert pool.running == 1, "the blocker still holds the only slot while the jobs queue"
    await asyncio.gather(blocker, *tasks)
    started = [(sc.timing.started, label) for label, sc in syscalls]
    assert len({t for t, _ in started}) == len(started), "one slot: no two jobs start together"
    return [label for _, label in sorted(started)]


def _kernel(data_dir, scheduler: str, **options: Any) -> Kernel:
    core = SimCore(max_batch=1, t0=0.001, a=0.0, b=0.0)
    return Kernel(cores=[core], scheduler=scheduler, scheduler_options=options, preemption=False, data_dir=data_dir, entry_point_plugins=False)


def test_priority_dispatch_order_through_the_kernel(data_dir):
    # catches: the kernel ignoring an agent's priority (FIFO order instead)
    async def main() -> list[str]:
        async with _kernel(data_dir, "priority") as kernel:
            jobs = [(f"p{p}-{i}", {"register": {"priority": p}}) for i, p in enumerate([1, 5, 3, 5, 0, 4])]
            return await _started_order(kernel, jobs)

    assert run_virtual(main()) == ["p5-1", "p5-3", "p4-5", "p3-2", "p1-0", "p0-4"]


def test_plas_dispatch_order_through_the_kernel_groups_calls_by_program(data_dir):
    # catches: PLAS keyed by call (the long program's calls would run first, in arrival order) and call-level
    # FCFS within a level (small-a's second call would run after small-b's)
    async def main() -> list[str]:
        async with _kernel(data_dir, "plas") as kernel:
            # the "long" program has attained ~300 tokens of service before the others arrive: the lowest level
            await kernel.agent("long").achat("warm up", max_tokens=400, extra={"sim_tokens": 300})
            jobs = [
                ("long-1", {"agent": "long"}),
                ("small-a-1", {"agent": "small-a"}),
                ("long-2", {"agent": "long"}),
                ("small-b-1", {"agent": "small-b"}),
                ("small-a-2", {"agent": "small-a"}),
            ]
            return await _started_order(kernel, jobs)

    assert run_virtual(main()) == ["small-a-1", "small-a-2", "small-b-1", "long-1", "long-2"]


def test_srpt_dispatch_order_through_the_kernel(data_dir):
    # catches: hint_tokens lost on the way to the policy, or SRPT ignoring the length (FIFO order instead)
    async def main() -> list[str]:
        async with _kernel(data_dir, "srpt") as kernel:
            hints = [30, 10, None, 20, 5]
            jobs = [(f"h{h}", {"hint_tokens": h}) for h in hints]
            return await _started_order(kernel, jobs)

    assert run_virtual(main()) == ["h5", "h10", "h20", "h30", "hNone"]
