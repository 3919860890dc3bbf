"""PLAS with rank="gittins": the order follows the sizes of programs that ended (FCFS on alike programs, LAS on heavy tails)."""

from __future__ import annotations

import random

import pytest

from aios_core.scheduler import Job, PLASScheduler
from aios_core.scheduler.gittins import GittinsIndex


def _served(s: PLASScheduler, program: str, tokens: int) -> None:
    """``program`` ran a call of ``tokens`` tokens."""
    j = Job(id=f"{program}-{tokens}-{random.random()}", agent=program, program=program)
    s.on_arrival(j)
    s.on_tokens(j, tokens)
    s.on_finish(j)


def test_alike_programs_rank_up_as_they_progress_and_heavy_tails_rank_down():
    alike = GittinsIndex(min_samples=1)
    for _ in range(50):
        alike.observe(300.0)
    assert alike.index(200) > alike.index(100) > alike.index(0)  # nearer its end: serve it first (FCFS)
    rng = random.Random(0)
    tail = GittinsIndex(min_samples=1)
    for _ in range(500):
        tail.observe(16 * rng.paretovariate(1.1))
    # past the smallest size, the longer a program ran, the longer it will still run: LAS
    assert tail.index(50) > tail.index(200) > tail.index(2000)


def test_the_window_forgets_old_programs():
    g = GittinsIndex(window=10, min_samples=1)
    for _ in range(10):
        g.observe(1000.0)
    before = g.index(0)
    for _ in range(10):
        g.observe(10.0)
    assert g.index(0) > before


def test_with_alike_programs_an_older_program_is_served_before_a_new_one():
    levels = PLASScheduler(base=64, min_slice=1, starvation_ratio=None, rank="levels")
    gittins = PLASScheduler(base=64, min_slice=1, starvation_ratio=None, rank="gittins", gittins_min_samples=5)
    for s in (levels, gittins):
        for i in range(20):  # twenty ended programs of 300 tokens each
            _served(s, f"done{i}", 300)
            s.forget_program(f"done{i}")
        _served(s, "old", 200)  # two thirds done
        s.push(Job(id="old-call", agent="old", program="old", arrival=0.0), 0.0)
        s.push(Job(id="new-call", agent="new", program="new", arrival=1.0), 1.0)
    assert levels.pop(2.0).id == "new-call"  # least attained service: the new program first
    assert gittins.pop(2.0).id == "old-call"  # Gittins: the one about to finish first


def test_gittins_falls_back_to_levels_until_enough_programs_ended_and_checks_its_options():
    s = PLASScheduler(base=64, min_slice=1, starvation_ratio=None, rank="gittins", gittins_min_samples=5)
    _served(s, "old", 200)
    s.push(Job(id="old-call", agent="old", program="old"), 0.0)
    s.push(Job(id="new-call", agent="new", program="new"), 0.0)
    assert s.pop(0.0).id == "new-call"
    with pytest.raises(ValueError, match="rank"):
        PLASScheduler(rank="fastest")
    with pytest.raises(ValueError, match="preempt_ratio"):
        PLASScheduler(rank="gittins", preempt_ratio=0.5)


def test_running_programs_count_as_censored_sizes_kaplan_meier():
    g = GittinsIndex(min_samples=1, resolution=1.0001)
    for size in (10.0, 20.0):
        g.observe(size)
    # ended only: P(end by 10) = 1/2 over 10 tokens, P(end by 20) = 1 over 15 tokens on average: 1/15
    assert g.index(0) == pytest.approx(1 / 15)
    g.set_running([15.0])
    # one program still runs past 15: S(10) = 2/3, S(20) = 0; service to 20 is 10 + 2/3 * 10
    assert g.index(0) == pytest.approx(1 / (10 + 10 * 2 / 3))


def test_while_the_kernel_warms_up_a_long_running_program_does_not_look_about_to_end():
    """The first programs to end are the short ones; the long ones still running must count, or a long
    program past every ended size ranks with a new one and, being older, goes first."""
    s = PLASScheduler(base=64, min_slice=1, starvation_ratio=None, gittins_min_samples=5)
    for i in range(10):
        _served(s, f"long{i}", 1000)  # ten long programs, still running (they will come back)
    for i in range(10):
        _served(s, f"chat{i}", 100)
        s.forget_program(f"chat{i}")  # ten short ones ended
    s.push(Job(id="long-call", agent="long0", program="long0", arrival=0.0), 0.0)
    s.push(Job(id="new-call", agent="new", program="new", arrival=1.0), 1.0)
    assert s.pop(2.0).id == "new-call"  # half of the programs seen so far were short: the new one may be too


def test_queued_calls_are_reranked_when_the_learned_sizes_change():
    rng = random.Random(3)
    s = PLASScheduler(base=64, min_slice=1, starvation_ratio=None, gittins_min_samples=1)
    for i in range(30):
        _served(s, f"done{i}", 300)
        s.forget_program(f"done{i}")
    jobs = []
    for i in range(40):
        name = f"p{i}"
        _served(s, name, rng.choice([0, 20, 100, 200, 280, 400, 900]))
        job = Job(id=f"{name}-call", agent=name, program=name, arrival=float(i))
        s.on_arrival(job)
        s.push(job, float(i))
        jobs.append(job)
    for i in range(30):  # the workload turns heavy-tailed: least attained service is now the better order
        _served(s, f"tail{i}", 16 * rng.paretovariate(1.1))
        s.forget_program(f"tail{i}")
    expected = sorted(jobs, key=lambda j: (-s.index(j.program), s.program_arrival(j), j.seq))
    assert [s.pop(50.0).id for _ in jobs] == [j.id for j in expected]


def test_a_program_that_never_comes_back_ends_after_program_idle_and_teaches_the_rank():
    s = PLASScheduler(program_idle=60.0, gittins_min_samples=1)
    assert s.rank == "gittins" and s.starvation_ratio == 200.0  # the defaults
    j = Job(id="a-1", agent="a", program="a", arrival=0.0)
    s.on_arrival(j)
    s.on_tokens(j, 300)
    j.ended_at = 10.0
    s.on_finish(j)
    assert not s.gittins.ready and s.attained("a") == 300
    s.on_arrival(Job(id="b-1", agent="b", program="b", arrival=50.0))  # a has been idle 40 s: still a program
    assert s.attained("a") == 300
    s.on_arrival(Job(id="c-1", agent="c", program="c", arrival=80.0))  # 70 s: it ended
    assert s.attained("a") == 0 and s.gittins.ready


def _ended(s: PLASScheduler, program: str, tokens: int, application: str | None) -> None:
    """``program`` of ``application`` ran ``tokens`` tokens and ended."""
    j = Job(id=f"{program}-1", agent=program, program=program, application=application)
    s.on_arrival(j)
    s.on_tokens(j, tokens)
    s.on_finish(j)
    s.forget_program(program)


def _queued(s: PLASScheduler, program: str, application: str | None, t: float) -> Job:
    j = Job(id=f"{program}-q", agent=program, program=program, application=application, arrival=t, enqueued_at=t)
    s.on_arrival(j)
    s.push(j, t)
    return j


@pytest.mark.parametrize("by_application", [True, False])
def test_a_new_program_is_ranked_by_the_sizes_of_its_own_application(by_application: bool):
    # mutation caught: one size distribution for every program. Half the programs that ended were chats of
    # 10 tokens, half coding runs of 1000: a new program of either looks the same under the mix, so they
    # go in arrival order; under their own applications' sizes the chat is far nearer its end
    s = PLASScheduler(gittins_min_samples=5, application_min_samples=5, rank_by_application=by_application)
    for i in range(10):
        _ended(s, f"chat{i}", 10, "chat")
        _ended(s, f"code{i}", 1000, "code")
    code = _queued(s, "code-new", "code", 1.0)
    chat = _queued(s, "chat-new", "chat", 2.0)
    order = [s.pop(3.0).id for _ in range(2)]
    assert order == ([chat.id, code.id] if by_application else [code.id, chat.id])
    if by_application:
        assert s.index("chat-new") == pytest.approx(1 / 10) and s.index("code-new") == pytest.approx(1 / 1000)


def test_an_application_with_few_ended_programs_is_ranked_under_every_programs_sizes():
    s = PLASScheduler(gittins_min_samples=5, application_min_samples=5, max_applications=2)
    for i in range(10):
        _ended(s, f"x{i}", 100, None)
    for i in range(4):
        _ended(s, f"new{i}", 10, "new")
    j = _queued(s, "new-q", "new", 1.0)
    stats = s._programs[j.program]
    assert s.estimate_for(stats) is s.gittins  # 4 of its own ended: not enough
    _ended(s, "new4", 10, "new")
    assert s.estimate_for(stats) is s._applications["new"]
    # at most max_applications estimates are kept, the least recently ended application's dropped first
    _ended(s, "a0", 10, "a")
    _ended(s, "b0", 10, "b")
    assert list(s._applications) == ["a", "b"]
    assert s.estimate_for(stats) is s.gittins
    for bad in ({"max_applications": 0}, {"application_min_samples": 0}):
        with pytest.raises(ValueError, match="max_applications and application_min_samples"):
            PLASScheduler(**bad)


def test_the_application_is_the_leading_system_messages_and_the_tools_offered():
    from aios_core.syscalls import LLMRequest

    def app(messages, tools=()):
        return LLMRequest(messages=messages, tools=[{"name": t} for t in tools]).application()

    sys_a = {"role": "system", "content": "You are a coder."}
    q1, q2 = {"role": "user", "content": "fix bug 1"}, {"role": "user", "content": "write a test"}
    assert app([sys_a, q1]) == app([sys_a, q2]) is not None  # the task does not change the application
    assert app([sys_a, q1]) != app([{"role": "system", "content": "You are a chat bot."}, q1])
    assert app([sys_a, q1], ["run_tests"]) != app([sys_a, q1])
    assert app([q1]) is None  # nothing names the application: ranked under every program's sizes
    assert app([q1, {"role": "system", "content": "late"}]) is None  # only the leading system messages count


async def test_the_kernel_tells_the_scheduler_which_application_a_call_belongs_to(make_kernel):
    from aios_core.cores.sim import SimCore
    from aios_core.syscalls import LLMRequest

    messages = [{"role": "system", "content": "You sort numbers."}, {"role": "user", "content": "3 1 2"}]
    async with make_kernel(scheduler="plas", cores=[SimCore(t0=0.0001)]) as kernel:
        await kernel.agent("sorter").achat(messages, extra={"sim_tokens": 3})
        (stats,) = [p for pool in kernel.pools.values() for p in pool.scheduler._programs.values()]
    assert stats.application == LLMRequest(messages=messages).application() is not None


def test_each_application_counts_its_own_running_programs_as_censored_sizes():
    # mutation caught: running programs told only to the estimate of every program, so an application's
    # estimate is made of its short programs that ended first while its long ones still run
    s = PLASScheduler(gittins_min_samples=1, application_min_samples=1)
    _ended(s, "chat-0", 10, "chat")
    _ended(s, "code-0", 100, "code")
    running = Job(id="code-1-a", agent="code-1", program="code-1", application="code")
    s.on_arrival(running)
    s.on_tokens(running, 700)
    other = Job(id="chat-1-a", agent="chat-1", program="chat-1", application="chat")
    s.on_arrival(other)
    s.on_tokens(other, 5)
    _queued(s, "code-2", "code", 1.0)
    s.peek(2.0)
    assert s._applications["code"]._censored == [700.0] and s._applications["chat"]._censored == [5.0]
    assert s.gittins._censored == [5.0, 700.0]
