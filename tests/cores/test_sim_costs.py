"""The sim core's performance model: step costs with the context term, and its prefix cache under the KV capacity."""

from __future__ import annotations

import asyncio

import pytest

from aios_core.clock import run_virtual
from aios_core.cores.base import Generation
from aios_core.cores.sim import SimCore, SimCosts, message_tokens
from aios_core.syscalls import LLMRequest

COSTS = SimCosts(t0=0.01, a=0.002, b=0.005, c=0.0001, restore_cost=0.0)


def _request(*messages: tuple[str, str], n: int, max_tokens: int = 64) -> LLMRequest:
    return LLMRequest(messages=[{"role": r, "content": c} for r, c in messages], max_tokens=max_tokens, extra={"sim_tokens": n})


async def _run(core: SimCore, request: LLMRequest, gid: str) -> tuple[str, int, float]:
    """Generate to the end; returns the text, the cached prompt tokens reported, and the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    text, cached = "", 0
    async for chunk in core.generate(Generation(id=gid, request=request)):
        text += chunk.text
        cached = chunk.cached_tokens or cached
        if chunk.finish_reason is not None:
            break
    return text, cached, loop.time() - start


def test_a_call_alone_costs_prefill_then_decode_steps_that_read_the_whole_context():
    prompt_words, n = 300, 20
    request = _request(("user", " ".join(["w"] * prompt_words)), n=n)
    p = message_tokens(" ".join(["w"] * prompt_words))

    async def main() -> float:
        core = SimCore(costs=COSTS, prefix_cache=0)
        await core.start()
        try:
            return (await _run(core, request, "x"))[2]
        finally:
            await core.stop()

    took = run_virtual(main())
    prefill = COSTS.step(prefill_tokens=p, batch=1, context_tokens=0)
    decode = sum(COSTS.step(batch=1, context_tokens=p + pos) for pos in range(1, n))
    assert took == pytest.approx(prefill + decode, rel=1e-9)
    # the context term is what makes a long conversation's steps dearer than a short one's
    assert decode > (n - 1) * COSTS.step(batch=1) + (n - 1) * COSTS.c * p


def test_the_prefix_cache_shares_system_prompts_and_keeps_the_answer_for_the_next_turn():
    system = ("system", " ".join(["rule"] * 200))
    turn1 = ("user", "first question")

    async def main() -> tuple[int, int, int, float, float]:
        core = SimCore(costs=COSTS, prefix_cache=64)
        await core.start()
        try:
            answer, cached1, t1 = await _run(core, _request(system, turn1, n=12), "a")
            _, cached_other, _ = await _run(core, _request(system, ("user", "another agent"), n=12), "b")
            _, cached2, t2 = await _run(core, _request(system, turn1, ("assistant", answer), ("user", "next"), n=12), "c")
            return cached1, cached_other, cached2, t1, t2
        finally:
            await core.stop()

    cached1, cached_other, cached2, t1, t2 = run_virtual(main())
    assert cached1 == 0
    assert cached_other == message_tokens(system[1])  # another agent of the same app skips the system prompt
    # the follow-up carries the first answer: system, first question and the answer are all reused
    assert cached2 == message_tokens(system[1]) + message_tokens(turn1[1]) + 12 + 4
    assert t2 < t1


def test_without_a_prefix_cache_nothing_is_shared():
    system = ("system", " ".join(["rule"] * 200))

    async def main() -> int:
        core = SimCore(costs=COSTS, prefix_cache=0)
        await core.start()
        try:
            await _run(core, _request(system, ("user", "a"), n=4), "a")
            return (await _run(core, _request(system, ("user", "b"), n=4), "b"))[1]
        finally:
            await core.stop()

    assert run_virtual(main()) == 0


def test_cached_entries_give_way_to_running_sequences_and_the_books_balance():
    # room for about two running calls: idle cache entries must be evicted for the next ones, never over capacity
    capacity = 2 * (message_tokens(" ".join(["w"] * 300)) + 64) + 10

    async def main() -> SimCore:
        core = SimCore(costs=COSTS, prefix_cache=1000, kv_capacity=capacity, max_batch=8)
        await core.start()
        try:
            for wave in range(3):
                requests = [_request(("system", " ".join([f"s{wave}{i}"] * 300)), ("user", "go"), n=8) for i in range(2)]
                assert all(core.can_admit(Generation(id="probe", request=r)) for r in requests[:1])
                await asyncio.gather(*(_run(core, r, f"{wave}-{i}") for i, r in enumerate(requests)))
                assert core._kv_used + core._cache.tokens <= capacity
            return core
        finally:
            await core.stop()

    core = run_virtual(main())
    assert core._kv_used == 0 and core._cache.pinned_tokens == 0  # nothing leaked once every call ended
    assert 0 < core._cache.tokens <= capacity


def test_a_preempted_and_restored_call_yields_the_same_text():
    request = _request(("system", "be brief"), ("user", "tell me"), n=30)

    async def main() -> tuple[str, str]:
        core = SimCore(costs=COSTS)
        await core.start()
        try:
            whole, _, _ = await _run(core, request, "whole")
            text, snapshot = "", None
            async for chunk in core.generate(Generation(id="cut", request=request)):
                text += chunk.text
                if len(text) > 20 and snapshot is None:
                    core.preempt("cut")
                if chunk.finish_reason == "preempted":
                    snapshot = chunk.snapshot
                    break
            async for chunk in core.generate(Generation(id="cut", request=request, resume=snapshot)):
                text += chunk.text
                if chunk.finish_reason is not None:
                    break
            return whole, text
        finally:
            await core.stop()

    whole, resumed = run_virtual(main())
    assert resumed == whole


def test_costs_are_checked_and_profiles_name_unknown_keys():
    with pytest.raises(ValueError, match="sim cost c"):
        SimCosts(c=-1.0)
    with pytest.raises(ValueError, match="unknown sim cost"):
        SimCosts.from_dict({"t0": 0.01, "d": 1})
    assert SimCosts.from_dict(COSTS.as_dict()) == COSTS
