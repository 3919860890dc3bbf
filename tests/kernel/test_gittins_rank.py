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
    levels = PLASScheduler(base=64, min_slice=1, starvation_ratio=None)
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
