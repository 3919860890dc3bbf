"""The policies as pure functions over queues: no model, no kernel, no clock."""

from __future__ import annotations

import pytest

from aios_core.scheduler import FifoScheduler, Job, PLASScheduler, PriorityScheduler, RoundRobinScheduler, SRPTScheduler


def job(name: str, program: str | None = None, priority: int = 0, t: float = 0.0, hint: int | None = None) -> Job:
    return Job(id=name, agent=name, program=program or name, priority=priority, arrival=t, enqueued_at=t, hint_tokens=hint)


def drain(s, now: float = 0.0) -> list[str]:
    out = []
    while (j := s.pop(now)) is not None:
        out.append(j.id)
    return out


def test_fifo_keeps_arrival_order_and_removes_any_job():
    s = FifoScheduler()
    jobs = [job(f"j{i}", t=i) for i in range(5)]
    for j in jobs:
        s.push(j, j.arrival)
    assert s.remove(jobs[2]) and not s.remove(jobs[2])
    assert len(s) == 4
    assert s.peek(0).id == "j0"
    assert drain(s) == ["j0", "j1", "j3", "j4"]
    assert not s.should_preempt(jobs[0], 10)


def test_round_robin_preempts_after_quantum_and_requeues_at_back():
    s = RoundRobinScheduler(quantum=4)
    a, b = job("a"), job("b")
    s.push(b, 0)
    s.on_dispatch(a, 0)
    s.on_tokens(a, 3)
    assert not s.should_preempt(a, 1)
    s.on_tokens(a, 1)
    assert s.should_preempt(a, 1)
    s.push(a, 1)  # preempted: goes behind b
    assert drain(s) == ["b", "a"]
    s.on_dispatch(a, 2)
    assert a.slice_tokens == 0
    with pytest.raises(ValueError):
        RoundRobinScheduler(quantum=0)


def test_priority_orders_by_priority_then_ages_low_priority_jobs():
    s = PriorityScheduler(aging=1.0, min_slice=0)
    low, high = job("low", priority=0, t=0.0), job("high", priority=5, t=0.0)
    s.push(low, 0)
    s.push(high, 0)
    assert s.peek(0).id == "high"
    # a low-priority job that waited long enough overtakes a newer high-priority one
    s2 = PriorityScheduler(aging=1.0)
    old = job("old", priority=0, t=0.0)
    new = job("new", priority=5, t=10.0)
    s2.push(old, 0)
    s2.push(new, 10)
    assert s2.pop(10.5).id == "old"


def test_priority_preempts_lower_priority_runner_after_min_slice():
    s = PriorityScheduler(aging=0.0, min_slice=2)
    runner = job("runner", priority=0)
    s.push(job("vip", priority=9), 0)
    s.on_dispatch(runner, 0)
    s.on_tokens(runner, 1)
    assert not s.should_preempt(runner, 0)
    s.on_tokens(runner, 1)
    assert s.should_preempt(runner, 0)


def test_plas_prefers_programs_with_less_attained_service():
    s = PLASScheduler(base=10, min_slice=1, starvation_ratio=None)
    long_call = job("long-1", program="long")
    s.on_arrival(long_call)
    s.on_tokens(long_call, 100)  # program "long" has attained 100 tokens
    s.push(job("long-2", program="long"), 0)
    s.push(job("short-1", program="short"), 1)
    assert s.pop(2).id == "short-1"
    assert s.level("long") > s.level("short")


def test_plas_preempts_a_long_program_for_a_new_short_one():
    s = PLASScheduler(base=8, min_slice=4, starvation_ratio=None)
    runner = job("r", program="big")
    s.on_arrival(runner)
    s.on_dispatch(runner, 0)
    s.on_tokens(runner, 40)
    s.push(job("n", program="new"), 1)
    assert s.should_preempt(runner, 1)
    # but not a job of the same level
    peer = job("p", program="peer")
    s.on_dispatch(peer, 0)
    s.on_tokens(peer, 4)
    assert not s.should_preempt(peer, 1)


def test_plas_demotes_lazily_when_a_program_gains_service_while_waiting():
    s = PLASScheduler(base=10, min_slice=1, starvation_ratio=None)
    waiting = job("w", program="p")
    s.on_arrival(waiting)
    s.push(waiting, 0)
    s.push(job("q", program="q"), 0)
    sibling = job("sib", program="p")  # a parallel call of the same program runs meanwhile
    s.on_arrival(sibling)
    s.on_tokens(sibling, 50)
    assert s.pop(1).id == "q"
    assert s.pop(1).id == "w"
    assert len(s) == 0


def _served_programs(s, tokens: int, *started: tuple[str, float]) -> None:
    """Programs that made a first call at the given times and got ``tokens`` of service each."""
    for name, t in started:
        first = job(f"{name}-1", program=name, t=t)
        s.on_arrival(first)
        s.on_tokens(first, tokens)


def test_plas_serves_a_level_in_program_arrival_order_not_call_order():
    # two long programs in the same (last) level: the one that started first goes first, even though its
    # latest call was queued after the newer program's call (call order would serve the oldest program last)
    s = PLASScheduler(base=10, levels=2, min_slice=1, max_wait=None)
    _served_programs(s, 100, ("old", 0.0), ("new", 5.0))
    s.push(job("new-2", program="new", t=20.0), 20.0)
    s.push(job("old-2", program="old", t=21.0), 21.0)
    assert s.level("old") == s.level("new") == 1
    assert [s.pop(22.0).id, s.pop(22.0).id] == ["old-2", "new-2"]


def test_plas_serves_the_oldest_program_first_among_starving_calls():
    s = PLASScheduler(base=10, min_slice=1, max_wait=10.0)
    _served_programs(s, 500, ("old", 0.0), ("new", 1.0))
    s.push(job("new-2", program="new", t=2.0), 2.0)
    s.push(job("old-2", program="old", t=3.0), 3.0)
    s.push(job("light", program="light", t=4.0), 4.0)
    assert s.peek(5.0).id == "light"  # nobody starves yet: least attained service
    assert s.peek(14.0).id == "old-2"  # both long calls starve: the older program's first


def test_plas_serves_starving_programs_first():
    s = PLASScheduler(base=1, starvation_ratio=3.0, min_service=1.0, min_slice=1)
    old = job("old", program="heavy", t=0.0)
    s.on_arrival(old)
    s.on_dispatch(old, 0.0)
    s.on_tokens(old, 1000)
    s.on_release(old, 2.0)  # ran 2 s
    old.enqueued_at = 2.0
    s.push(old, 2.0)
    s.push(job("fresh", program="light", t=3.0), 3.0)
    assert s.peek(3.0).id == "fresh"  # waited 1 s < 3 x 2 s: least attained service wins
    assert not s.is_starving(old, 7.9)
    assert s.is_starving(old, 8.1)  # waited over 3 x its service
    assert s.peek(8.1).id == "old"
    runner = job("runner", program="light")
    s.on_dispatch(runner, 8.0)
    s.on_tokens(runner, 2)
    assert s.should_preempt(runner, 8.1)


def test_srpt_runs_shortest_remaining_first_and_unknown_last():
    s = SRPTScheduler(min_slice=0)
    s.push(job("unknown"), 0)
    s.push(job("long", hint=500), 0)
    s.push(job("short", hint=5), 0)
    assert drain(s) == ["short", "long", "unknown"]
    runner = job("r", hint=100)
    s.push(job("tiny", hint=1), 0)
    assert s.should_preempt(runner, 0)


def test_removal_from_heaps_is_exact_and_bounded():
    s = PriorityScheduler()
    jobs = [job(f"j{i}", priority=i % 7) for i in range(500)]
    for j in jobs:
        s.push(j, 0)
    for j in jobs[:450]:
        assert s.remove(j)
    assert len(s) == 50
    assert len(s._queue._heap) < 200  # dead entries are compacted
    assert sorted(drain(s)) == sorted(j.id for j in jobs[450:])


def test_program_history_is_bounded():
    s = FifoScheduler(max_programs=100)
    for i in range(1000):
        j = job(f"j{i}", program=f"p{i}")
        s.on_arrival(j)
        s.on_finish(j)
    assert len(s._programs) <= 100


def test_programs_stay_in_order_of_last_activity_so_the_idle_sweep_finds_every_ended_one():
    # mutation caught: reading a program's stats (its prefill) or a call that ends without a time moving the
    # program to the back, ahead of programs active later: the sweep stops at them and misses the idle one
    s = PLASScheduler(program_idle=60.0)
    a1 = job("a1", program="a", t=0.0)
    s.on_arrival(a1)
    s.on_tokens(a1, 50)
    b1 = job("b1", program="b", t=5.0)
    s.on_arrival(b1)
    s.on_tokens(b1, 20)
    b1.ended_at = 10.0
    s.on_finish(b1)
    s.on_prefill(a1, 100)  # accounting only: a was last active at 0
    s.on_finish(a1)  # no end time known
    assert [name for name, _ in s._programs.items()] == ["a", "b"]
    s.on_arrival(job("c1", program="c", t=65.0))  # a idle 65 s, b 55 s
    assert s.attained("a") == 0 and s.attained("b") == 20  # a ended, b (within program_idle) kept its history


def test_plas_program_idle_past_program_idle_starts_over_and_a_busy_one_keeps_its_level():
    # mutation caught: history kept for ever (the agent that ran long once stays last in line), or reset while
    # the program still has a call in flight or came back within program_idle
    s = PLASScheduler(base=64, levels=4, program_idle=60.0)
    first = job("a1", program="long", t=0.0)
    s.on_arrival(first)
    s.on_tokens(first, 1000)
    first.ended_at = 10.0
    s.on_finish(first)
    again = job("a2", program="long", t=50.0)  # back 40 s after its last call ended: the same program
    s.on_arrival(again)
    assert s.level("long") == 3
    s.on_tokens(again, 10)
    again.ended_at = 55.0
    s.on_finish(again)
    later = job("a3", program="long", t=200.0)  # 145 s idle: a new program
    s.on_arrival(later)
    assert s.attained("long") == 0 and s.level("long") == 0
    assert s.program_arrival(later) == 200.0
    # a program with a call in flight is never idle, however long ago it arrived
    busy = job("b1", program="busy", t=0.0)
    s.on_arrival(busy)
    s.on_tokens(busy, 1000)
    s.on_arrival(job("b2", program="busy", t=500.0))
    assert s.level("busy") == 3
    with pytest.raises(ValueError, match="program_idle"):
        PLASScheduler(program_idle=0)
