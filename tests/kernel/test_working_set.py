"""PLAS's load control: a new program waits while the conversations in flight fill the KV budget (no thrashing)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.scheduler import Job, PLASScheduler
from aios_core.scheduler.working_set import WorkingSet

_ids = itertools.count()


def _plas(**options: object) -> PLASScheduler:
    s = PLASScheduler(min_slice=1, starvation_ratio=None, gittins_min_samples=1, application_min_samples=1, **options)
    s.set_kv_cells(1500)  # budget 600 with the default share (0.4)
    return s


def _job(program: str, app: str, now: float) -> Job:
    return Job(id=f"{program}-{next(_ids)}", agent=program, program=program, arrival=now, enqueued_at=now, application=app)


def _start(s: PLASScheduler, program: str, app: str, now: float, prompt: int) -> Job:
    """``program`` makes a call that runs now and holds a conversation of ``prompt`` tokens."""
    job = _job(program, app, now)
    s.on_arrival(job)
    s.push(job, now)
    assert s.pop(now) is job
    s.on_dispatch(job, now)
    s.on_prefill(job, prompt)
    return job


def _end_call(s: PLASScheduler, job: Job, now: float, tokens: int) -> None:
    s.on_tokens(job, tokens)
    s.on_release(job, now)
    job.ended_at = now
    s.on_finish(job)


def _ended_program(s: PLASScheduler, program: str, app: str, now: float, context: int) -> None:
    """A whole program of ``app`` that reached ``context`` tokens of conversation and ended."""
    _end_call(s, _start(s, program, app, now, context - 50), now, 50)
    s.forget_program(program)


def test_a_new_large_program_waits_while_the_conversations_in_flight_fill_the_budget():
    s = _plas()
    _ended_program(s, "coder0", "code", 0.0, 400)  # coding conversations reach 400 tokens
    _ended_program(s, "chat0", "chat", 0.0, 30)  # chats 30 (under 1/16 of the budget: small)
    busy = _start(s, "chat1", "chat", 0.5, 10)  # keeps the engine busy throughout
    running = _start(s, "coder1", "code", 1.0, 300)  # in flight: 300 tokens, 400 expected
    new = _job("coder2", "code", 2.0)
    s.on_arrival(new)
    s.push(new, 2.0)
    assert s.holds(new, 2.0)
    assert s.peek(2.0) is None  # 310 in flight + 400 > 600: it would evict coder1's conversation
    chat = _job("chat2", "chat", 2.5)
    s.on_arrival(chat)
    s.push(chat, 2.5)
    assert s.pop(2.5) is chat  # a small program goes by
    s.on_dispatch(chat, 2.5)
    _end_call(s, chat, 3.0, 5)
    s.forget_program("chat2")
    # coder1 waits for a tool between calls: its conversation still counts
    _end_call(s, running, 4.0, 20)
    assert s.peek(4.5) is None
    follow_up = _job("coder1", "code", 5.0)
    s.on_arrival(follow_up)
    s.push(follow_up, 5.0)
    assert s.pop(5.0) is follow_up  # a program in flight is never held
    s.on_dispatch(follow_up, 5.0)
    assert s.peek(5.0) is None
    _end_call(s, follow_up, 6.0, 20)
    s.forget_program("coder1")  # its agent ended: the room is free
    assert s.pop(6.0) is new
    _end_call(s, busy, 7.0, 1)


def test_load_control_never_idles_the_engine_and_forgets_programs_gone_quiet():
    s = _plas(resident_ttl=10.0)
    _ended_program(s, "coder0", "code", 0.0, 400)
    quiet = _start(s, "coder1", "code", 1.0, 300)
    _end_call(s, quiet, 2.0, 10)  # between calls now, and it never calls again (its client never says so)
    new = _job("coder2", "code", 3.0)
    s.on_arrival(new)
    s.push(new, 3.0)
    # nothing runs: the new program starts whatever the budget says
    assert s.peek(3.0) is new
    s.remove(new)
    busy = _start(s, "chat", "chat", 3.0, 10)
    s.push(new, 3.0)
    assert s.peek(3.0) is None  # coder1 is between calls and counts
    assert s.in_flight_context(3.0) == pytest.approx(310 + 10)
    assert s.peek(12.5) is new  # ten seconds after its last call, coder1 counts no more
    _end_call(s, busy, 13.0, 1)


def test_an_application_s_footprint_is_the_mean_conversation_of_its_ended_programs():
    ws = WorkingSet(share=0.5, small_share=0.1, max_applications=2)
    assert ws.admits("x", 10_000)  # no budget (cells unknown): nothing is held
    ws.set_cells(1000)
    assert ws.budget == 500
    ws.grew("code", 120)
    assert ws.footprint("code") == (120, False)  # none ended: the largest conversation so far, counted as large
    assert not ws.admits("code", 400)  # 400 + 120 > 500
    assert ws.admits("code", 380)
    assert ws.admits("code", 0)  # with nothing kept even a program larger than the budget starts
    ws.ended("code", 200)
    ws.ended("code", 100)
    ws.grew("code", 900)
    assert ws.footprint("code") == (150, True)
    ws.ended("chat", 30)
    assert ws.admits("chat", 10_000)  # known and under a tenth of the budget: never held
    ws.followed_up("rag", carried=False)  # its calls send a fresh document, not the conversation so far
    assert not ws.keeps("rag")
    assert ws.footprint("rag") == (0.0, True)
    assert ws.admits("rag", 10_000)
    assert ws.footprint("code") == (0.0, False)  # at most two applications are remembered, the oldest dropped
    ws.set_cells(None)
    assert ws.budget is None


def test_programs_whose_calls_do_not_carry_their_conversation_keep_nothing_in_flight():
    s = _plas()
    _start(s, "chat1", "chat", 0.0, 10)
    first = _start(s, "rag1", "rag", 0.0, 500)
    _end_call(s, first, 1.0, 20)
    assert s.in_flight_context(1.0) == 10 + 520  # between calls, its conversation may be reused
    _start(s, "rag1", "rag", 2.0, 510)  # 510 < 520: the prompt is not the conversation so far
    assert s.in_flight_context(2.0) == 10


@pytest.mark.parametrize(
    "options",
    [{"kv_share": 0}, {"kv_share": 1.5}, {"small_share": 1.0}, {"small_share": -0.1}, {"resident_ttl": 0}],
)
def test_bad_load_control_options_are_refused(options):
    with pytest.raises(ValueError):
        PLASScheduler(**options)


def test_without_a_budget_the_order_is_the_gittins_order():
    for s in (_plas(kv_share=None), PLASScheduler(min_slice=1, starvation_ratio=None, gittins_min_samples=1)):
        _ended_program(s, "coder0", "code", 0.0, 400)
        _start(s, "coder1", "code", 1.0, 550)
        new = _job("coder2", "code", 2.0)
        s.on_arrival(new)
        s.push(new, 2.0)
        assert not s.holds(new, 2.0)
        assert s.pop(2.0) is new


async def test_the_pool_tells_the_scheduler_the_cells_its_engines_keep_conversations_in(tmp_path):
    cached = SimCore("cached", kv_capacity=4096, prefix_cache=64)
    uncached = SimCore("uncached", model="other", kv_capacity=4096, prefix_cache=0)
    async with Kernel(cores=[cached, uncached], scheduler="plas", data_dir=tmp_path, entry_point_plugins=False) as kernel:
        assert kernel.pools["sim"].kv_cells() == 4096
        assert kernel.pools["sim"].scheduler.working_set.budget == pytest.approx(0.4 * 4096)
        assert kernel.pools["other"].kv_cells() is None  # nothing is kept between calls: no load control
        assert kernel.pools["other"].scheduler.working_set.budget is None


def test_a_remote_engine_says_its_kv_cells_only_when_configured():
    from aios_core.cores.openai_core import OpenAICore
    from aios_core.errors import ConfigError

    assert OpenAICore(model="m").kv_cells() is None  # not known: no load control
    assert OpenAICore(model="m", kv_cells=262_144).kv_cells() == 262_144
    for bad in (0, -5, 1.5, True, "many"):
        with pytest.raises(ConfigError, match="kv_cells"):
            OpenAICore(model="m", kv_cells=bad)


def test_a_program_that_has_just_started_counts_at_its_expected_footprint():
    s = _plas()
    _ended_program(s, "coder0", "code", 0.0, 400)
    _start(s, "chat1", "chat", 0.5, 10)
    first, second = _job("coder1", "code", 1.0), _job("coder2", "code", 1.0)
    for job in (first, second):
        s.on_arrival(job)
        s.push(job, 1.0)
    assert s.pop(1.0) is first
    s.on_dispatch(first, 1.0)
    # its prompt is not known yet, but it will keep about 400 tokens: 10 + 400 + 400 > 600
    assert s.in_flight_context(1.0) == 10 + 400
    assert s.peek(1.0) is None
    s.on_prefill(first, 120)
    assert s.in_flight_context(1.0) == 10 + 120
    assert s.pop(1.0) is second  # 130 + 400 fits


def test_an_agent_that_keeps_a_huge_conversation_in_flight_holds_others_back_for_max_hold_at_most():
    s = _plas(max_hold=100.0)
    _ended_program(s, "coder0", "code", 0.0, 400)
    hog = _start(s, "hog", "hog", 0.0, 590)  # one conversation fills the budget, and its agent keeps calling
    new = _job("coder1", "code", 1.0)
    s.on_arrival(new)
    s.push(new, 1.0)
    for t in (2.0, 50.0, 100.0):
        s.on_tokens(hog, 1)
        assert s.peek(t) is None
    assert s.peek(101.5) is new  # held 100 s: it starts whatever the budget says
    assert not s.holds(new, 101.5)
    with pytest.raises(ValueError, match="max_hold"):
        PLASScheduler(max_hold=0)


def test_a_held_call_shows_as_held_and_starts_when_the_conversation_in_flight_ends(tmp_path):
    from aios_core.clock import run_virtual
    from aios_core.llm_pool import FlightState
    from aios_core.syscalls import LLMRequest, LLMSyscall

    system = {"role": "system", "content": " ".join(["rule"] * 300)}

    def call(agent: str, words: int, tokens: int) -> LLMSyscall:
        user = {"role": "user", "content": " ".join([agent] * words)}
        return LLMSyscall(agent=agent, request=LLMRequest(messages=[system, user], max_tokens=450, extra={"sim_tokens": tokens}))

    async def main() -> list[FlightState]:
        core = SimCore(kv_capacity=4096, max_batch=4)  # a budget of 0.4 * 4096 = 1638 tokens of conversation
        async with Kernel(cores=[core], scheduler="plas", scheduler_options={"gittins_min_samples": 1}, data_dir=tmp_path, entry_point_plugins=False) as kernel:
            pool = kernel.pools["sim"]
            for name in ("a0", "a1", "a2"):
                kernel.register_agent(name)
            await kernel.acall(call("a0", 500, 16))  # a program of this application reached ~820 tokens
            kernel.end_agent("a0")
            first = asyncio.ensure_future(kernel.acall(call("a1", 600, 300)))  # ~920 tokens in flight for a while
            await asyncio.sleep(0.5)
            second = asyncio.ensure_future(kernel.acall(call("a2", 500, 16)))  # 920 + 820 > 1638: held
            await asyncio.sleep(0.5)
            states = [pool.state_of(f) for f in pool.flights()]
            await first
            kernel.end_agent("a1")
            await asyncio.wait_for(second, timeout=60)
            return states

    states = run_virtual(main())
    assert sorted(states) == sorted([FlightState.RUNNING, FlightState.HELD])
