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
