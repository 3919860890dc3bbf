"""The scheduler study: every setup of design.md on the sim core, over several workload families and seeds.

    python -m aios.bench.studies.schedulers [--family pareto|bimodal|replay|all] [--seeds 0-5] [--slo]

Everything runs on virtual time (:func:`aios_core.clock.run_virtual`), so each
setup sees exactly the same arrivals and costs and the study is repeatable to
the last digit. The sim core's step costs come from a profile fitted to the
embedded Gemma 3 270M by the calibration command
(``profiles/gemma3-270m-cpu1.json``: per step, per prompt token, per sequence
and per token of context), so the seconds printed are plausible seconds of
that model on one CPU thread.

Setups: (a) framework-native, no AIOS: every agent calls the engine itself and
the engine serves one call at a time; (b) the engine with first-come-first-
served continuous batching, no AIOS; (b2) the same engine with its own prefix
cache (what vLLM's automatic prefix caching, SGLang's radix cache and
llama-server give: a prompt whose prefix is cached skips it, finished answers
stay cached, least recently used entries are evicted under the KV capacity);
(c) AIOS fifo; (d) AIOS round robin with snapshot/restore; (e) AIOS fifo with
prefix sharing; (f) AIOS PLAS; (g) AIOS PLAS with prefix sharing; (g2) the
same with PLAS's former rank, least attained service by levels; (h) SRPT with
known lengths (an oracle for the mean) and (h2) the same with prefix sharing:
what an order that knew every program's length would give over (b2), the
ceiling of what scheduling can add to the cache. ``--scheduler-option`` sets PLAS
options of (f), (g) and (g2). The baseline that counts is (b2):
an engine a user would run anyway.

By default every setup runs on the same engine costs, so the setups differ
only in scheduling and caching. ``--baseline-profile`` gives the setups
without AIOS (a, b, b2) another engine's costs: fitted to llama.cpp as
llama-server runs it (``profiles/gemma3-270m-cpu1-plain.json``), the study
compares what a user gets, engine and order together, as the real-engine
benchmarks do; each setup's slowdown is then reckoned on its own engine.

Each setup gets its own lower bound (shared prefill only where that setup can
share), and efficiency = bound / makespan. With ``--slo`` the study also finds
the throughput at an SLO: the highest arrival rate at which the p99 of agent
slowdown (completion time / the program alone on an idle engine) stays within
2x (Autellix's metric), for (b2) and (g).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shlex
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from aios.bench.metrics import jain, percentile, summarize
from aios.bench.result_stamps import claim_stamp
from aios.bench.studies.cli_options import key_value_options
from aios.bench.studies.workload import FAMILIES, PROFILES, Program, describe, make_family

from aios_core.clock import run_virtual
from aios_core.cores.base import Generation
from aios_core.cores.sim import SimCore, SimCosts, message_tokens
from aios_core.errors import ConfigError
from aios_core.kernel import Kernel
from aios_core.syscalls import LLMRequest, LLMSyscall

#: the sim costs the study loads by default: AIOS's llama.cpp core as it ships (its greedy output head), fitted by
#: the calibration command on this kind of machine
DEFAULT_PROFILE = PROFILES / "gemma3-270m-cpu1.json"
#: the same engine as llama-server runs it: llama.cpp's output layer on every row, one token a step
PLAIN_PROFILE = PROFILES / "gemma3-270m-cpu1-plain.json"
#: KV cells of the engine (the embedded llamacpp core's default context)
KV_CAPACITY = 16384
#: context of one sequence; agents drop their oldest turns to stay within it, as frameworks do
CONTEXT_LENGTH = 8192
#: entries the engine's prefix cache may hold (KV capacity is what bounds it in practice)
PREFIX_ENTRIES = 100_000
#: arrival rates (agents/s) that loaded the 8-slot engine of the 2026-12-05 profile heavily but not hopelessly:
#: (b2)'s calls spent 75-79 % of their time queued (seed 0). The default rates keep that load on any engine.
DEFAULT_RATES = {"pareto": 0.2, "bimodal": 0.5, "replay": 0.4}
#: that engine's decoding costs (t0 18.3 ms a step, 11.2 ms a sequence); its prefill and context terms do not enter
REFERENCE_ENGINE = SimCosts(t0=0.01827, b=0.011157)
#: the SLO: p99 slowdown (completion / alone) at most this
SLO_SLOWDOWN = 2.0


def default_rate(family: str, baseline: SimCosts, max_batch: int = 8) -> float:
    """The family's arrival rate, scaled by the baseline engine's decode capacity against the reference engine's.

    The rates are a load, not a constant: on an engine twice as fast, the same
    agents per second leave (b2) idle and no order has anything to do. So the
    default offers the baseline engine (the one of the setups without AIOS) the
    load the reference engine got: the rate times reference seconds per token
    over this engine's, a full batch decoding (the context term left out).
    """
    return DEFAULT_RATES[family] * REFERENCE_ENGINE.step(batch=8) / 8 / (baseline.step(batch=max_batch) / max_batch)


class ProfileError(ValueError):
    """A cost profile is missing or malformed."""


def load_costs(path: Path = DEFAULT_PROFILE) -> SimCosts:
    """The sim costs of a profile written by ``python -m aios.bench.studies.calibration --fit-only``."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"cost profile {path} is missing; fit one with python -m aios.bench.studies.calibration --fit-only") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"cost profile {path} is not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("costs"), dict):
        raise ProfileError(f"cost profile {path} has no 'costs' mapping (t0, a, b, c, restore_cost)")
    try:
        return SimCosts.from_dict(data["costs"])
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"cost profile {path}: {exc}") from None


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    scheduler: str | None  # None: no AIOS kernel, agents call the engine directly
    direct_slots: int = 0
    prefix_sharing: bool = False
    #: scheduler options (the kernel's ``scheduler_options``)
    options: tuple[tuple[str, Any], ...] = ()


def setups(max_batch: int, plas_options: tuple[tuple[str, Any], ...] = ()) -> list[Setup]:
    """Every setup; ``plas_options`` go to the PLAS setups (f, g, g2), under each setup's own options."""
    return [_with_plas_options(s, plas_options) for s in _setups(max_batch)]


def _with_plas_options(setup: Setup, plas_options: tuple[tuple[str, Any], ...]) -> Setup:
    if setup.scheduler != "plas" or not plas_options:
        return setup
    return replace(setup, options=tuple(plas_options) + setup.options)


def _setups(max_batch: int) -> list[Setup]:
    return [
        Setup("a", "framework-native (no AIOS, one call at a time)", None, direct_slots=1),
        Setup("b", "engine FCFS batching (no AIOS)", None, direct_slots=max_batch),
        Setup("b2", "engine FCFS batching + engine prefix cache (no AIOS)", None, direct_slots=max_batch, prefix_sharing=True),
        Setup("c", "AIOS fifo", "fifo"),
        Setup("d", "AIOS rr + snapshot/restore", "rr"),
        Setup("e", "AIOS fifo + prefix sharing", "fifo", prefix_sharing=True),
        Setup("f", "AIOS plas", "plas"),
        Setup("g", "AIOS plas + prefix sharing", "plas", prefix_sharing=True),
        # the default PLAS ranks by the Gittins index; (g2) is its former rank, least attained service by levels
        Setup("g2", "AIOS plas, levels rank + prefix sharing", "plas", prefix_sharing=True, options=(("rank", "levels"),)),
        Setup("h", "srpt, known lengths (oracle)", "srpt"),
        # what any order could give on top of the cache (g) shares: the ceiling of the scheduling targets against (b2)
        Setup("h2", "srpt, known lengths (oracle) + prefix sharing", "srpt", prefix_sharing=True),
    ]


SETUP_KEYS = [s.key for s in setups(1)]
AIOS_KEYS = ("c", "d", "e", "f", "g", "g2")


@dataclass(frozen=True)
class Engines:
    """The step costs of the engine each setup runs on.

    ``kernel`` is the engine behind AIOS's setups (c..h2, the kernel's own
    core), ``baseline`` the engine the setups without AIOS call directly (a, b,
    b2). By default both are the same profile, so the setups differ only in
    scheduling and caching. On the real machine they are not the same engine:
    AIOS's llama.cpp core computes greedy rows with its own output head, while
    llama-server runs llama.cpp's output layer on every row. A baseline profile
    fitted to that plain engine (``--baseline-profile``) makes the study compare
    what a user gets, engine and scheduling together, as the real-engine benchmarks do.
    """

    kernel: SimCosts
    baseline: SimCosts

    @classmethod
    def same(cls, costs: SimCosts) -> Engines:
        return cls(costs, costs)

    def for_setup(self, setup: Setup) -> SimCosts:
        return self.baseline if setup.scheduler is None else self.kernel


# --------------------------------------------------------------------------- what the agents send


def messages(program: Program, i: int, answers: list[str]) -> list[dict[str, str]]:
    """Call ``i``'s messages: the system prompt, the conversation so far if the program keeps one, the new input.

    ``answers`` are the model's earlier answers (the first of each step's
    calls). The oldest turns are dropped while prompt + budget exceeds the
    context, as agent frameworks trim their memory.
    """
    system = {"role": "system", "content": program.system_prompt}
    user = {"role": "user", "content": _input(program, i)}
    if not program.history:
        return [system, user]
    turns = [[{"role": "user", "content": _input(program, j)}, {"role": "assistant", "content": answers[j]}] for j in range(i)]

    def size(ts: list[list[dict[str, str]]]) -> int:
        return sum(message_tokens(m["content"]) for m in [system, user, *(m for t in ts for m in t)])

    while turns and size(turns) + program.max_tokens > CONTEXT_LENGTH:
        turns.pop(0)
    return [system, *(m for t in turns for m in t), user]


def _input(program: Program, i: int) -> str:
    """Step ``i``'s new input: its own words (no two agents send the same task or observation)."""
    return " ".join([f"{program.agent}-{i}"] + ["step"] * (program.calls[i].prompt_words - 1))


def _request(program: Program, i: int, answers: list[str]) -> LLMRequest:
    return LLMRequest(
        messages=messages(program, i, answers),
        # agents ask for a fixed budget (as framework configs do); the sim then generates the call's true length
        max_tokens=program.max_tokens,
        extra={"sim_tokens": program.calls[i].output_tokens},
    )


def _placeholder_answers(program: Program) -> list[str]:
    """Answers of the right token counts (the sim answers a call with exactly its ``output_tokens`` words)."""
    return [" ".join(["w"] * c.output_tokens) for c in program.calls]


def _core(max_batch: int, prefix_sharing: bool, costs: SimCosts) -> SimCore:
    return SimCore(
        max_batch=max_batch, prefix_cache=PREFIX_ENTRIES if prefix_sharing else 0, kv_capacity=KV_CAPACITY,
        context_length=CONTEXT_LENGTH, costs=costs,
    )


# --------------------------------------------------------------------------- running a setup


class _Recorder:
    def __init__(self) -> None:
        self.completion: dict[str, float] = {}
        self.waiting = 0.0
        self.turnaround = 0.0
        self.calls = 0


async def _program_via_kernel(kernel: Kernel, program: Program, rec: _Recorder) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(program.arrival)
    start = loop.time()
    kernel.register_agent(program.agent)
    remaining = program.output_tokens
    answers: list[str] = []
    for i, call in enumerate(program.calls):
        syscalls = [LLMSyscall(agent=program.agent, request=_request(program, i, answers), hint_tokens=remaining) for _ in range(call.fanout)]
        results = await asyncio.gather(*[kernel.acall(sc) for sc in syscalls])
        answers.append(results[0].content or "")
        for sc in syscalls:
            rec.waiting += sc.timing.waiting or 0.0
            rec.turnaround += sc.timing.turnaround or 0.0
            rec.calls += 1
        remaining -= call.output_tokens * call.fanout
        if i + 1 < len(program.calls):
            await asyncio.sleep(call.tool_seconds)
    rec.completion[program.agent] = loop.time() - start
    kernel.end_agent(program.agent)


class _EngineGate:
    """The engine's own admission without AIOS: first come first served, a call starts when it is first in
    line, one of ``slots`` is free and its KV fits (as vLLM and llama-server admit waiting requests)."""

    def __init__(self, core: SimCore, slots: int) -> None:
        self.core = core
        self.slots = slots
        self.busy = 0
        self.waiting: deque[tuple[Generation, asyncio.Future[None]]] = deque()
        self.granted = False  # a call was let in and has not reached the core yet

    async def run(self, gen: Generation) -> tuple[float, str]:
        """Run ``gen`` to its end once the engine takes it; return the loop time it was taken and its text."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((gen, future))
        self._admit()
        await future
        started = loop.time()
        stream = self.core.generate(gen)
        self.granted = False
        self._admit()  # the core now counts this call: the next one can be checked against it
        text = []
        try:
            async for chunk in stream:
                text.append(chunk.text)
                if chunk.finish_reason is not None:
                    break
        finally:
            self.busy -= 1
            self._admit()
        return started, "".join(text)

    def _admit(self) -> None:
        if self.granted or not self.waiting or self.busy >= self.slots:
            return
        gen, future = self.waiting[0]
        if self.core.can_admit(gen):
            self.waiting.popleft()
            self.busy += 1
            self.granted = True
            future.set_result(None)


async def _program_direct(gate: _EngineGate, program: Program, rec: _Recorder) -> None:
    """What a framework does without AIOS: call the engine itself and wait for the engine to take the call."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(program.arrival)
    start = loop.time()
    answers: list[str] = []

    async def one(i: int, j: int) -> str:
        t_call = loop.time()
        gen = Generation(id=f"{program.agent}-{i}-{j}", request=_request(program, i, answers), agent=program.agent)
        t_run, text = await gate.run(gen)
        rec.waiting += t_run - t_call
        rec.turnaround += loop.time() - t_call
        rec.calls += 1
        return text

    for i, call in enumerate(program.calls):
        texts = await asyncio.gather(*[one(i, j) for j in range(call.fanout)])
        answers.append(texts[0])
        if i + 1 < len(program.calls):
            await asyncio.sleep(call.tool_seconds)
    rec.completion[program.agent] = loop.time() - start


async def _run_setup(setup: Setup, trace: list[Program], max_batch: int, costs: SimCosts, data_dir: Path) -> dict[str, Any]:
    rec = _Recorder()
    core = _core(max_batch, setup.prefix_sharing, costs)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    wall = time.perf_counter()
    if setup.scheduler is None:
        await core.start()
        gate = _EngineGate(core, setup.direct_slots)
        await asyncio.gather(*[_program_direct(gate, p, rec) for p in trace])
        await core.stop()
    else:
        kernel = Kernel(
            cores=[core], scheduler=setup.scheduler, scheduler_options=dict(setup.options), data_dir=data_dir,
            entry_point_plugins=False, max_queued=1_000_000,
        )
        async with kernel:
            await asyncio.gather(*[_program_via_kernel(kernel, p, rec) for p in trace])
    stats = core.stats()
    return {
        "rec": rec,
        "makespan": loop.time() - t0 - min(p.arrival for p in trace),
        "wall_seconds": time.perf_counter() - wall,
        "mean_batch": stats.mean_batch,
        "prefix_hit_rate": stats.prefix_hit_rate,
        "snapshots": stats.snapshots,
    }


# --------------------------------------------------------------------------- alone times and lower bounds


@dataclass(frozen=True)
class CallShape:
    """A call's prompt as message token counts, and how much of it a prefix cache could hold at best."""

    prompt: int
    system: int
    #: tokens of earlier turns (inputs and answers) the call carries
    history: int
    #: tokens of answers among them (generated, so never prefilled when cached)
    answers: int
    output: int
    fanout: int


def shapes(program: Program) -> list[CallShape]:
    answers = _placeholder_answers(program)
    out = []
    for i, call in enumerate(program.calls):
        msgs = messages(program, i, answers)
        sizes = [message_tokens(m["content"]) for m in msgs]
        answer_tokens = sum(s for m, s in zip(msgs, sizes) if m["role"] == "assistant")
        out.append(CallShape(sum(sizes), sizes[0], sum(sizes[1:-1]), answer_tokens, call.output_tokens, call.fanout))
    return out


def _call_seconds(costs: SimCosts, shape: CallShape, cached: int, slots: int) -> float:
    """The call's ``fanout`` copies alone on the engine: one prefill step, then decode steps (exact for fanout 1)."""
    k, n, p = shape.fanout, shape.output, shape.prompt
    cached = min(cached, p - 1)
    # the first copy computes the uncached part; its siblings share the whole prompt but its last token
    prefill = (p - cached) + (k - 1) if cached or k > 1 else p
    width = min(k, slots)
    rounds = math.ceil(k / width)
    seconds = rounds * costs.t0 + costs.a * prefill + costs.b * k + costs.c * (cached + (k - 1) * (p - 1))
    # decode: n - 1 steps per copy, context p + pos
    seconds += rounds * (n - 1) * costs.t0 + k * (n - 1) * costs.b + k * costs.c * ((n - 1) * p + n * (n - 1) / 2)
    return seconds


def alone_time(program: Program, costs: SimCosts, *, cache: bool = True, system_cached: bool = False, slots: int = 8) -> float:
    """How long ``program`` takes on an idle engine: with ``cache``, each call reuses the conversation so far
    (and the system prompt when ``system_cached``)."""
    total = 0.0
    for i, (call, shape) in enumerate(zip(program.calls, shapes(program))):
        cached = 0
        if cache:
            cached = shape.history + (shape.system if (system_cached or i > 0) else 0)
        total += _call_seconds(costs, shape, cached, slots)
        if i + 1 < len(program.calls):
            total += call.tool_seconds
    return total


def lower_bound(trace: list[Program], costs: SimCosts, max_batch: int, setup: Setup) -> dict[str, float]:
    """No schedule of ``setup`` can finish sooner: the slowest program alone (after its arrival), or all the work.

    Work = every step's fixed cost over as few steps as the slots allow, plus
    each sequence-step's cost, plus every sequence's context reads, plus the
    prefill this setup cannot avoid: every prompt token without a prefix cache;
    with one, each distinct input once (system prompts once per application,
    each turn once per program, no generated answer again).
    """
    slots = setup.direct_slots or max_batch
    t_first = min(p.arrival for p in trace)
    first_of_app: dict[int, float] = {}
    for p in trace:
        first_of_app.setdefault(p.app, p.arrival)
    critical = max(
        p.arrival - t_first
        + alone_time(p, costs, cache=setup.prefix_sharing, system_cached=first_of_app[p.app] < p.arrival, slots=slots)
        for p in trace
    )
    tokens = 0
    context = 0.0
    prefill = 0
    systems: set[int] = set()
    for p in trace:
        for shape in shapes(p):
            n, k = shape.output, shape.fanout
            tokens += n * k
            context += k * ((n - 1) * shape.prompt + n * (n - 1) / 2)
            if not setup.prefix_sharing:
                prefill += shape.prompt * k
                continue
            prefill += shape.prompt - shape.system - shape.history + k - 1
            if p.app not in systems:
                systems.add(p.app)
                prefill += shape.system
    work = math.ceil(tokens / slots) * costs.t0 + costs.b * tokens + costs.c * context + costs.a * prefill
    return {"critical_path": critical, "work": work, "bound": max(critical, work)}


# --------------------------------------------------------------------------- one study


def _row(setup: Setup, result: dict[str, Any], trace: list[Program], alone: dict[str, float], bound: dict[str, float]) -> dict[str, Any]:
    rec: _Recorder = result["rec"]
    completion = [rec.completion[p.agent] for p in trace]
    slowdown = [rec.completion[p.agent] / alone[p.agent] for p in trace]
    return {
        "setup": setup.key,
        "label": setup.label,
        "makespan": result["makespan"],
        "agents_per_s": len(trace) / result["makespan"],
        **{f"completion_{k}": v for k, v in summarize(completion).items()},
        "queue_wait_share": rec.waiting / rec.turnaround if rec.turnaround else 0.0,
        "slowdown_mean": statistics.fmean(slowdown),
        "slowdown_p99": percentile(slowdown, 99),
        "jain_fairness": jain([1 / s for s in slowdown]),
        "mean_batch": result["mean_batch"],
        "prefix_hit_rate": result["prefix_hit_rate"],
        "snapshots": result["snapshots"],
        "lower_bound": bound["bound"],
        "bound_critical_path": bound["critical_path"],
        "bound_work": bound["work"],
        "efficiency": bound["bound"] / result["makespan"],
        "wall_seconds": result["wall_seconds"],
        "completion": completion,
    }


def alone_times(trace: list[Program], costs: SimCosts) -> dict[str, float]:
    """The reference of slowdown and of the SLO: each program alone on an idle engine with a prefix cache."""
    return {p.agent: alone_time(p, costs) for p in trace}


def run_one(setup: Setup, trace: list[Program], max_batch: int, costs: SimCosts, data_dir: Path) -> dict[str, Any]:
    """One setup on one trace, in virtual time: its table row."""
    result = run_virtual(_run_setup(setup, trace, max_batch, costs, data_dir / setup.key))
    return _row(setup, result, trace, alone_times(trace, costs), lower_bound(trace, costs, max_batch, setup))


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    by = {r["setup"]: r for r in rows}
    out: dict[str, float] = {}
    if "c" in by and "f" in by:
        out |= {
            "plas_vs_fifo_mean": by["c"]["completion_mean"] / by["f"]["completion_mean"],
            "plas_vs_fifo_p50": by["c"]["completion_p50"] / by["f"]["completion_p50"],
            "plas_vs_fifo_p99": by["c"]["completion_p99"] / by["f"]["completion_p99"],
        }
    for key in ("g", "g2", "h2"):
        if "b2" in by and key in by:
            out |= {
                f"{key}_vs_b2_makespan": by["b2"]["makespan"] / by[key]["makespan"],
                f"{key}_vs_b2_mean": by["b2"]["completion_mean"] / by[key]["completion_mean"],
                f"{key}_vs_b2_p99": by["b2"]["completion_p99"] / by[key]["completion_p99"],
            }
    aios = [r for r in rows if r["setup"] in AIOS_KEYS]
    if "a" in by and aios:
        out |= {
            "aios_best_vs_native_makespan": by["a"]["makespan"] / min(r["makespan"] for r in aios),
            "aios_best_vs_native_mean": by["a"]["completion_mean"] / min(r["completion_mean"] for r in aios),
        }
    return out


def study(
    agents: int, seed: int, max_batch: int, arrival_rate: float, costs: SimCosts | Engines, data_dir: Path, *,
    family: str = "pareto", only: list[str] | None = None, plas_options: tuple[tuple[str, Any], ...] = (),
) -> dict[str, Any]:
    """Every setup (or ``only`` those) on one trace. Each setup runs on its engine's costs, and its slowdowns and
    lower bound are reckoned on the same engine: a faster engine gets no credit in slowdown or the SLO."""
    engines = costs if isinstance(costs, Engines) else Engines.same(costs)
    trace = make_family(family, agents=agents, seed=seed, arrival_rate=arrival_rate)
    rows = [
        run_one(s, trace, max_batch, engines.for_setup(s), data_dir)
        for s in setups(max_batch, plas_options) if only is None or s.key in only
    ]
    return {
        "kind": "aios-bench-schedulers",
        "config": {
            "family": family, "agents": agents, "seed": seed, "max_batch": max_batch, "arrival_rate": arrival_rate,
            "costs": engines.kernel.as_dict(), "baseline_costs": engines.baseline.as_dict(),
            "kv_capacity": KV_CAPACITY, "context_length": CONTEXT_LENGTH, "plas_options": dict(plas_options),
        },
        "trace": describe(trace),
        "rows": rows,
        "ratios": ratios(rows),
    }


# --------------------------------------------------------------------------- throughput at an SLO


def p99_slowdown(setup: Setup, family: str, agents: int, seed: int, rate: float, max_batch: int, costs: SimCosts, data_dir: Path) -> float:
    trace = make_family(family, agents=agents, seed=seed, arrival_rate=rate)
    result = run_virtual(_run_setup(setup, trace, max_batch, costs, data_dir / f"{setup.key}-{rate:.5f}"))
    alone = alone_times(trace, costs)
    rec: _Recorder = result["rec"]
    return percentile([rec.completion[p.agent] / alone[p.agent] for p in trace], 99)


def slo_throughput(
    setup: Setup, family: str, agents: int, seed: int, max_batch: int, costs: SimCosts, data_dir: Path, *,
    start: float = 0.02, slo: float = SLO_SLOWDOWN, refine: int = 5, measure: Callable[..., float] = p99_slowdown,
) -> dict[str, Any]:
    """The highest arrival rate (agents/s) at which p99 slowdown stays within ``slo``: grow the rate by 1.5x
    until it breaks, then bisect (geometrically) ``refine`` times. Returns the rate and every probe."""
    probes: list[tuple[float, float]] = []

    def ok(rate: float) -> bool:
        value = measure(setup, family, agents, seed, rate, max_batch, costs, data_dir)
        probes.append((rate, value))
        return value <= slo

    if ok(start):
        good, bad = start, start * 1.5
        while ok(bad):
            good, bad = bad, bad * 1.5
            if bad > 1e4:
                raise RuntimeError(f"setup {setup.key} meets the SLO at every rate tried; the workload is too light to measure")
    else:
        good, bad = start / 1.5, start
        while not ok(good):
            good, bad = good / 1.5, good
            if good < 1e-6:
                return {"setup": setup.key, "rate": 0.0, "first_failing_rate": bad, "probes": probes}
    for _ in range(refine):
        mid = math.sqrt(good * bad)
        if ok(mid):
            good = mid
        else:
            bad = mid
    return {"setup": setup.key, "rate": good, "first_failing_rate": bad, "probes": probes}


# --------------------------------------------------------------------------- reports


COLUMNS = [
    ("setup", "setup"), ("label", ""), ("makespan", "makespan s"), ("agents_per_s", "agents/s"), ("completion_mean", "mean s"),
    ("completion_p50", "p50 s"), ("completion_p99", "p99 s"), ("queue_wait_share", "wait share"), ("slowdown_mean", "slowdown"),
    ("jain_fairness", "Jain"), ("mean_batch", "batch"), ("prefix_hit_rate", "prefix hit"), ("lower_bound", "bound s"), ("efficiency", "efficiency"),
]


def print_report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(170, Console().width))
    cfg, trace = result["config"], result["trace"]
    table = Table(
        title=f"Scheduler study on the sim core, family {cfg['family']}: {trace['programs']} agents, {trace['calls']} LLM calls, "
        f"{trace['output_tokens']} output tokens (seed {cfg['seed']}, batch {cfg['max_batch']}, {cfg['arrival_rate']} agents/s, virtual time)"
    )
    for _, header in COLUMNS:
        table.add_column(header, justify="left" if header in ("setup", "") else "right", overflow="fold")
    for row in result["rows"]:
        table.add_row(*[f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k, _ in COLUMNS])
    console.print(table)
    r = result["ratios"]
    parts = []
    if "g_vs_b2_mean" in r:
        parts.append(f"AIOS plas + prefix sharing (g) vs engine with its prefix cache (b2): makespan {r['g_vs_b2_makespan']:.2f}x, "
                     f"mean completion {r['g_vs_b2_mean']:.2f}x, p99 {r['g_vs_b2_p99']:.2f}x")
    if "plas_vs_fifo_mean" in r:
        parts.append(f"PLAS vs FIFO (f vs c): mean {r['plas_vs_fifo_mean']:.2f}x, p50 {r['plas_vs_fifo_p50']:.2f}x, p99 {r['plas_vs_fifo_p99']:.2f}x")
    console.print("lower bound per setup (efficiency = bound / makespan); above 1: the first setup is slower. " + "; ".join(parts))


def markdown(result: dict[str, Any], command: str = "") -> str:
    """One study as a Markdown table (for docs/benchmarks.md)."""
    cfg, trace, r = result["config"], result["trace"], result["ratios"]
    lines = [
        f"**family {cfg.get('family', 'pareto')}: {trace['programs']} agents, {trace['calls']} LLM calls, {trace['output_tokens']} output tokens; "
        f"seed {cfg['seed']}, {cfg['max_batch']} engine slots, {cfg['arrival_rate']} agents/s arriving; virtual time**",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        "| setup | makespan s | completion mean s | p50 s | p99 s | queue-wait share | mean slowdown | Jain | mean batch | prefix hit | bound s | efficiency |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| ({row['setup']}) {row['label']} | {row['makespan']:.0f} | {row['completion_mean']:.1f} | {row['completion_p50']:.1f} | "
            f"{row['completion_p99']:.0f} | {100 * row['queue_wait_share']:.0f}% | {row['slowdown_mean']:.1f} | {row['jain_fairness']:.2f} | "
            f"{row['mean_batch']:.2f} | {100 * row['prefix_hit_rate']:.0f}% | {row['lower_bound']:.0f} | {row['efficiency']:.2f} |"
        )
    lines.append("")
    if "g_vs_b2_mean" in r:
        lines.append(f"(g) vs (b2): makespan {r['g_vs_b2_makespan']:.2f}x, mean completion **{r['g_vs_b2_mean']:.2f}x**, p99 **{r['g_vs_b2_p99']:.2f}x**. "
                     + (f"PLAS vs FIFO (f vs c): mean {r['plas_vs_fifo_mean']:.2f}x, p99 {r['plas_vs_fifo_p99']:.2f}x." if "plas_vs_fifo_mean" in r else ""))
    return "\n".join(lines)


#: the targets of issue 11 for the calibrated sim: (g) vs (b2)
TARGETS = {"g_vs_b2_mean": 2.0, "g_vs_b2_p99": 1.2, "slo_throughput": 2.0}


def summary_markdown(summary: dict[str, Any]) -> str:
    """The multi-family, multi-seed run: (g) vs (b2) per family and seed, with the targets met or missed."""
    lines = [
        "| family | seed | agents/s | (b2) mean s | (g) mean s | mean (b2)/(g) | (b2) p99 s | (g) p99 s | p99 (b2)/(g) | makespan (b2)/(g) "
        "| PLAS vs FIFO mean / p99 | clairvoyant (h2): mean / p99 vs (b2) | SLO rate (b2) | SLO rate (g) | SLO (g)/(b2) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def mark(value: float, target: float) -> str:
        return f"**{value:.2f}x**" if value >= target else f"{value:.2f}x (miss)"

    for run in summary["runs"]:
        by = {r["setup"]: r for r in run["rows"]}
        rt = run["ratios"]
        slo = run.get("slo") or {}
        slo_cells = ["", "", ""]
        if slo:
            b2, g = slo["b2"]["rate"], slo["g"]["rate"]
            slo_cells = [f"{b2:.3f}", f"{g:.3f}", mark(g / b2, TARGETS["slo_throughput"]) if b2 > 0 else "n/a"]
        lines.append(
            f"| {run['config']['family']} | {run['config']['seed']} | {run['config']['arrival_rate']} | {by['b2']['completion_mean']:.1f} | "
            f"{by['g']['completion_mean']:.1f} | {mark(rt['g_vs_b2_mean'], TARGETS['g_vs_b2_mean'])} | {by['b2']['completion_p99']:.0f} | "
            f"{by['g']['completion_p99']:.0f} | {mark(rt['g_vs_b2_p99'], TARGETS['g_vs_b2_p99'])} | {rt['g_vs_b2_makespan']:.2f}x | "
            + (f"{rt['plas_vs_fifo_mean']:.2f}x / {rt['plas_vs_fifo_p99']:.2f}x" if "plas_vs_fifo_mean" in rt else "")
            + " | " + (f"{rt['h2_vs_b2_mean']:.2f}x / {rt['h2_vs_b2_p99']:.2f}x" if "h2_vs_b2_mean" in rt else "")
            + f" | {' | '.join(slo_cells)} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = result["rows"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    x = range(len(rows))
    ax1.bar([i - 0.2 for i in x], [r["completion_mean"] for r in rows], width=0.4, label="mean")
    ax1.bar([i + 0.2 for i in x], [r["completion_p99"] for r in rows], width=0.4, label="p99")
    ax1.set_xticks(list(x), [f"({r['setup']})" for r in rows])
    ax1.set_ylabel("agent completion time (s)")
    ax1.set_yscale("log")
    ax1.set_title(f"Per-agent completion time by setup ({result['config'].get('family', 'pareto')}, seed {result['config']['seed']})")
    ax1.legend()
    for r in rows:
        xs = sorted(r["completion"])
        ax2.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=f"({r['setup']}) {r['label']}")
    ax2.set_xscale("log")
    ax2.set_xlabel("agent completion time (s)")
    ax2.set_ylabel("fraction of agents done")
    ax2.set_title("CDF of completion time")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aios.bench.studies.schedulers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="pareto", help=f"workload family: {', '.join(FAMILIES)} or all")
    parser.add_argument("--agents", type=int, default=240)
    parser.add_argument("--seed", type=int, default=None, help="one seed (default 0); --seeds runs several")
    parser.add_argument("--seeds", default=None, help="seeds, e.g. 0-5 or 0,2,4")
    parser.add_argument("--max-batch", type=int, default=8, help="engine slots (the embedded core default)")
    parser.add_argument("--arrival-rate", type=float, default=None, help=f"agents arriving per second (Poisson); default per family {DEFAULT_RATES} on the reference engine, "
                             "scaled to the baseline engine's decode capacity (default_rate)")
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE, help="sim cost profile (JSON written by the calibration command)")
    parser.add_argument(
        "--baseline-profile", type=Path, default=None,
        help="another profile for the setups without AIOS (a, b, b2), e.g. the engine as llama-server runs it "
             f"({PLAIN_PROFILE.name}, beside the default profile); default: --profile for every setup",
    )
    parser.add_argument("--setups", default=None, help=f"comma-separated subset of {','.join(SETUP_KEYS)} (default: all)")
    parser.add_argument("--slo", action="store_true", help="also find the throughput at the SLO for (b2) and (g)")
    parser.add_argument("--slo-agents", type=int, default=120, help="agents per probe of the SLO search")
    parser.add_argument(
        "--scheduler-option", action="append", default=[], metavar="KEY=VALUE",
        help="an option of PLAS in setups f, g and g2 (repeatable; JSON values), e.g. starvation_ratio=50",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print an earlier result file as Markdown and exit")
    args = parser.parse_args(argv)
    if args.markdown is not None:
        data = json.loads(args.markdown.read_text())
        print(summary_markdown(data) if data.get("kind") == "aios-bench-schedulers-summary" else markdown(data))
        return 0
    import tempfile

    families = list(FAMILIES) if args.family == "all" else [args.family]
    for family in families:
        if family not in FAMILIES:
            parser.error(f"unknown family {family!r}; choose from {', '.join(FAMILIES)} or all")
    seeds = _seeds(args.seeds) if args.seeds else [args.seed or 0]
    only = args.setups.split(",") if args.setups else None
    if only and (unknown := sorted(set(only) - set(SETUP_KEYS))):
        parser.error(f"unknown setup(s) {unknown}; choose from {','.join(SETUP_KEYS)}")
    plas_options = key_value_options(parser, "--scheduler-option", args.scheduler_option)
    try:  # the kernel's own check, before any run
        Kernel(cores=[], scheduler="plas", scheduler_options=dict(plas_options), entry_point_plugins=False).check()
    except ConfigError as exc:
        parser.error(f"--scheduler-option: {exc}")
    try:
        kernel_costs = load_costs(args.profile)
        engines = Engines(kernel_costs, load_costs(args.baseline_profile) if args.baseline_profile else kernel_costs)
    except ProfileError as exc:
        parser.error(str(exc))
    stamp, claim = claim_stamp(args.out, "schedulers")  # makes --out
    runs = []
    with claim, tempfile.TemporaryDirectory(prefix="aios-study-") as tmp:
        for family in families:
            rate = args.arrival_rate if args.arrival_rate is not None else round(default_rate(family, engines.baseline, args.max_batch), 4)
            for seed in seeds:
                result = study(
                    args.agents, seed, args.max_batch, rate, engines, Path(tmp) / f"{family}-{seed}", family=family, only=only,
                    plas_options=plas_options,
                )
                if args.slo:
                    result["slo"] = {
                        s.key: slo_throughput(s, family, args.slo_agents, seed, args.max_batch, engines.for_setup(s), Path(tmp) / f"slo-{family}-{seed}")
                        for s in setups(args.max_batch, plas_options) if s.key in ("b2", "g")
                    }
                    result["slo_config"] = {"agents": args.slo_agents, "slowdown_p99_at_most": SLO_SLOWDOWN}
                result["profile"] = str(args.profile)
                result["baseline_profile"] = str(args.baseline_profile or args.profile)
                print_report(result)
                if result.get("slo"):
                    b2, g = result["slo"]["b2"]["rate"], result["slo"]["g"]["rate"]
                    print(f"throughput at the SLO (p99 slowdown <= {SLO_SLOWDOWN}): (b2) {b2:.3f} agents/s, (g) {g:.3f} agents/s"
                          + (f", {g / b2:.2f}x" if b2 else ""))
                path = args.out / f"schedulers-{family}-s{seed}-{stamp}.json"
                path.write_text(_dump(result))
                png = plot(result, path.with_suffix(".png"))
                print(f"results: {path}" + (f", plot: {png}" if png else ""))
                runs.append(result)
    if len(runs) > 1 and all("g_vs_b2_mean" in r["ratios"] for r in runs):
        summary = {"kind": "aios-bench-schedulers-summary", "command": "python -m aios.bench.studies.schedulers " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)), "runs": runs}
        path = args.out / f"schedulers-summary-{stamp}.json"
        path.write_text(_dump(summary))
        print(summary_markdown(summary))
        print(f"summary: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
