"""A preempted generation resumes on the core that holds its snapshot when two cores serve one model.

A snapshot is engine state (KV cells for llama.cpp): only the core that took it
can restore it. The sim core would accept a foreign snapshot and produce the
same text, so the test records on which core each run of a generation happens
(a real engine would fail to restore another core's snapshot).

Mutation this catches: the pool routing a resumed flight by load and prefix
affinity alone (ignoring ``snapshot_core``): with two equally loaded cores,
resumes land on the other core.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aios_core.clock import run_virtual
from aios_core.cores.base import Generation
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel


class RecordingSimCore(SimCore):
    """Records on which core each run of a generation happens, and whether it resumed a snapshot."""

    def __init__(self, name: str, runs: dict[str, list[tuple[str, bool]]], step: float) -> None:
        super().__init__(name=name, model="m", max_batch=1, t0=step, a=0.0, b=0.0)
        self.runs = runs

    def generate(self, gen: Generation):  # type: ignore[no-untyped-def]
        self.runs[gen.id].append((self.name, gen.resume is not None))
        return super().generate(gen)


def test_a_preempted_generation_resumes_on_the_core_holding_its_snapshot(data_dir):
    runs: dict[str, list[tuple[str, bool]]] = defaultdict(list)

    async def main() -> list[str]:
        # different speeds: a core frees up while the other still holds a preempted job's snapshot
        cores = [RecordingSimCore("left", runs, 0.001), RecordingSimCore("right", runs, 0.0017)]
        async with Kernel(cores=cores, scheduler="rr", scheduler_options={"quantum": 4}, data_dir=data_dir, entry_point_plugins=False) as kernel:
            agents = [kernel.agent(f"a{i}") for i in range(6)]
            replies = await asyncio.gather(*[a.achat(f"task {i}", max_tokens=64, extra={"sim_tokens": 24}) for i, a in enumerate(agents)])
            assert all(r.usage.completion_tokens == 24 for r in replies)
            return [r.core for r in replies]

    finals = run_virtual(main())
    resumed = [(gen, segments) for gen, segments in runs.items() if any(was_resumed for _, was_resumed in segments)]
    assert len(resumed) >= 4, f"the round robin really preempted and resumed: {dict(runs)}"
    for gen, segments in runs.items():
        first_core = segments[0][0]
        assert all(core == first_core for core, _ in segments), f"{gen} moved between cores: {segments}"
    assert {core for segments in runs.values() for core, _ in segments} == {"left", "right"}, "both cores served"
    assert sorted(finals) == sorted(segments[-1][0] for segments in runs.values())
