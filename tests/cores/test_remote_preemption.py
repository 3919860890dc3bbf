"""A generation on a remote server is preempted only when asked for: its resume prefills the prompt and the text again."""

from __future__ import annotations

import asyncio

import pytest
from aios.bench.suites.agents.sim_server import SimServer

from aios_core.cores.openai_core import OpenAICore
from aios_core.cores.sim import SimCore
from aios_core.syscalls import Message

QUESTION = [Message(role="user", content="count slowly from one to forty")]


@pytest.fixture
def slow_server():
    server = SimServer(SimCore(t0=0.02, a=0.0, b=0.0, max_batch=4, default_tokens=(40, 40)), serial=False)
    server.start()
    yield server
    server.stop()


async def long_then_short(kernel, core):
    long_call = kernel.agent("long").llm_syscall(QUESTION, max_tokens=40)
    task = asyncio.ensure_future(kernel.acall(long_call))
    while core.stats().generated_tokens < 3:
        await asyncio.sleep(0.01)
    short = await kernel.agent("short").achat(QUESTION, max_tokens=2)
    response = await task
    assert short.content and response.usage.completion_tokens == 40
    return long_call.timing.preemptions


@pytest.mark.parametrize("recompute", [False, True], ids=["by default the long answer runs on", "preempt_recompute swaps it out"])
async def test_remote_generations_are_preempted_only_when_recompute_is_allowed(make_kernel, slow_server, recompute):
    core = OpenAICore("remote", "sim", base_url=slow_server.base_url, max_batch=1)
    assert not core.supports_snapshot
    async with make_kernel(cores=[core], scheduler="rr", scheduler_options={"quantum": 2}, preempt_recompute=recompute) as kernel:
        preemptions = await long_then_short(kernel, core)
    assert (preemptions >= 1) is recompute


async def test_a_local_core_is_still_preempted_by_default(make_kernel):
    core = SimCore(t0=0.02, a=0.0, b=0.0, max_batch=1, default_tokens=(40, 40))
    async with make_kernel(cores=[core], scheduler="rr", scheduler_options={"quantum": 2}) as kernel:
        assert await long_then_short(kernel, core) >= 1
