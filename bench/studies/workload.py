"""Synthetic agent programs with heavy-tailed lengths, the same trace for every setup of a study.

A program is what one agent does: a sequence of dependent LLM calls with tool
time between them. Real agent traces are heavy-tailed (a few programs make many
long calls; most are short), which is exactly where program-level scheduling
matters, so calls per program and tokens per call follow Pareto laws. Agents of
the same "app" share a system prompt, so prefix sharing has something to share.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Call:
    """One step of a program: ``fanout`` parallel LLM calls (tree search, map-reduce), then tool time."""

    prompt_words: int
    output_tokens: int
    tool_seconds: float  # time spent in tools after this step, before the next one
    fanout: int = 1


@dataclass(frozen=True)
class Program:
    agent: str
    app: int
    arrival: float
    calls: tuple[Call, ...]
    system_prompt: str = field(repr=False, default="")

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens * c.fanout for c in self.calls)


def _pareto(rng: random.Random, alpha: float, minimum: float, cap: float) -> float:
    return min(cap, minimum * rng.paretovariate(alpha))


def make_trace(
    *,
    agents: int = 240,
    seed: int = 0,
    arrival_rate: float = 4.0,
    apps: int = 8,
    system_words: int = 300,
    call_alpha: float = 1.2,
    max_calls: int = 24,
    token_alpha: float = 1.3,
    min_tokens: int = 16,
    max_tokens: int = 1024,
    tool_mean: float = 0.3,
    parallel_share: float = 0.2,
    max_fanout: int = 8,
) -> list[Program]:
    """Poisson arrivals (``arrival_rate`` agents/s); Pareto steps per program and tokens per call.

    A ``parallel_share`` of programs issue their calls ``fanout`` at a time
    (2..``max_fanout``), as tree-search and map-reduce agents do.
    """
    rng = random.Random(seed)
    systems = [" ".join(f"rule{a}_{i}" for i in range(system_words)) for a in range(apps)]
    t = 0.0
    programs = []
    for i in range(agents):
        t += rng.expovariate(arrival_rate)
        n_calls = int(_pareto(rng, call_alpha, 1, max_calls))
        fanout = rng.randint(2, max_fanout) if rng.random() < parallel_share else 1
        calls = tuple(
            Call(
                prompt_words=rng.randint(20, 120),
                output_tokens=int(_pareto(rng, token_alpha, min_tokens, max_tokens)),
                tool_seconds=rng.expovariate(1 / tool_mean) if tool_mean > 0 else 0.0,
                fanout=fanout,
            )
            for _ in range(n_calls)
        )
        app = rng.randrange(apps)
        programs.append(Program(agent=f"agent-{i:04d}", app=app, arrival=t, calls=calls, system_prompt=systems[app]))
    return programs
