"""The scheduler study: one heavy-tailed agent trace, every setup of design.md, on the sim core.

    python -m aios.bench.studies.schedulers [--agents 240] [--seed 0] [--out bench/results]

Everything runs on virtual time (:func:`aios_core.clock.run_virtual`), so each
setup sees exactly the same arrivals and costs and the study is repeatable to
the last digit. The sim core's costs default to the embedded Gemma 3 270M as
measured on this kind of machine (about 27 tokens/s at batch 1 and 87 at batch
16), so the seconds printed are plausible seconds of that model.

Setups: (a) framework-native, no AIOS: every agent calls the engine itself and
the engine serves one call at a time; (b) the engine with first-come-first-
served continuous batching, no AIOS; (c) AIOS fifo; (d) AIOS round robin with
snapshot/restore; (e) AIOS fifo with prefix sharing; (f) AIOS PLAS; (g) AIOS
PLAS with prefix sharing; (h) SRPT with known lengths (an oracle: the ceiling).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aios_core.clock import run_virtual
from aios_core.cores.base import Generation
from aios_core.cores.sim import SimCore, prompt_tokens
from aios_core.kernel import Kernel
from aios_core.syscalls import LLMRequest, LLMSyscall
from aios.bench.metrics import jain, percentile, summarize
from aios.bench.studies.workload import Program, make_trace

# Gemma 3 270M Q4_K_M on 2 CPU cores: step = t0 + a*prefill_tokens + b*batch (seconds)
GEMMA_COSTS = {"t0": 0.027, "a": 0.0005, "b": 0.0098}
#: the output budget agents request per call; the engine reserves KV for prompt + budget (as llama.cpp slots do)
MAX_TOKENS = 1024
#: KV cells of the engine (the embedded llamacpp core's default context)
KV_CAPACITY = 16384


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    scheduler: str | None  # None: no AIOS kernel, agents call the engine directly
    direct_slots: int = 0
    prefix_sharing: bool = False


def setups(max_batch: int) -> list[Setup]:
    return [
        Setup("a", "framework-native (no AIOS, one call at a time)", None, direct_slots=1),
        Setup("b", "engine FCFS batching (no AIOS)", None, direct_slots=max_batch),
        Setup("c", "AIOS fifo", "fifo"),
        Setup("d", "AIOS rr + snapshot/restore", "rr"),
        Setup("e", "AIOS fifo + prefix sharing", "fifo", prefix_sharing=True),
        Setup("f", "AIOS plas", "plas"),
        Setup("g", "AIOS plas + prefix sharing", "plas", prefix_sharing=True),
        Setup("h", "srpt, known lengths (ceiling)", "srpt"),
    ]


def _request(program: Program, call_index: int) -> LLMRequest:
    call = program.calls[call_index]
    return LLMRequest(
        messages=[
            {"role": "system", "content": program.system_prompt},
            {"role": "user", "content": " ".join(["step"] * call.prompt_words)},
        ],
        # agents ask for a fixed budget (as framework configs do); the sim then generates the call's true length
        max_tokens=MAX_TOKENS,
        extra={"sim_tokens": call.output_tokens},
    )


def _core(max_batch: int, prefix_sharing: bool, costs: dict[str, float]) -> SimCore:
    return SimCore(max_batch=max_batch, prefix_cache=64 if prefix_sharing else 0, kv_capacity=KV_CAPACITY, context_length=8192, **costs)


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
    for i, call in enumerate(program.calls):
        syscalls = [LLMSyscall(agent=program.agent, request=_request(program, i), hint_tokens=remaining) for _ in range(call.fanout)]
        await asyncio.gather(*[kernel.acall(sc) for sc in syscalls])
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
    line, one of ``slots`` is free and its KV fits (as vLLM admits waiting requests)."""

    def __init__(self, core: SimCore, slots: int) -> None:
        self.core = core
        self.slots = slots
        self.busy = 0
        self.waiting: deque[tuple[Generation, asyncio.Future[None]]] = deque()
        self.granted = False  # a call was let in and has not reached the core yet

    async def run(self, gen: Generation) -> float:
        """Run ``gen`` to its end once the engine takes it; return the loop time it was taken."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((gen, future))
        self._admit()
        await future
        started = loop.time()
        stream = self.core.generate(gen)
        self.granted = False
        self._admit()  # the core now counts this call: the next one can be checked against it
        try:
            async for chunk in stream:
                if chunk.finish_reason is not None:
                    break
        finally:
            self.busy -= 1
            self._admit()
        return started

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

    async def one(i: int, j: int) -> None:
        t_call = loop.time()
        gen = Generation(id=f"{program.agent}-{i}-{j}", request=_request(program, i), agent=program.agent)
        t_run = await gate.run(gen)
        rec.waiting += t_run - t_call
        rec.turnaround += loop.time() - t_call
        rec.calls += 1

    for i, call in enumerate(program.calls):
        await asyncio.gather(*[one(i, j) for j in range(call.fanout)])
        if i + 1 < len(program.calls):
            await asyncio.sleep(call.tool_seconds)
    rec.completion[program.agent] = loop.time() - start


async def _run_setup(setup: Setup, trace: list[Program], max_batch: int, costs: dict[str, float], data_dir: Path) -> dict[str, Any]:
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
        kernel = Kernel(cores=[core], scheduler=setup.scheduler, data_dir=data_dir, entry_point_plugins=False, max_queued=1_000_000)
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


def alone_time(program: Program, costs: dict[str, float]) -> float:
    """How long the program takes on an idle engine (batch 1, no prefix cache)."""
    t0, a, b = costs["t0"], costs["a"], costs["b"]
    total = 0.0
    for i, call in enumerate(program.calls):
        req = _request(program, i)
        prompt = prompt_tokens(req)
        k = call.fanout  # the step's parallel calls run together as one batch of k
        total += (t0 + a * prompt * k + b * k) + (call.output_tokens - 1) * (t0 + b * k)
        if i + 1 < len(program.calls):
            total += call.tool_seconds
    return total


def lower_bound(trace: list[Program], costs: dict[str, float], max_batch: int) -> dict[str, float]:
    """No schedule can finish sooner: the slowest program alone (after its arrival), or all the work at peak rates."""
    t_first = min(p.arrival for p in trace)
    critical = max(p.arrival - t_first + alone_time(p, costs) for p in trace)
    prompt_total = 0
    seen_prefixes: set[int] = set()
    for p in trace:
        for i, call in enumerate(p.calls):
            req = _request(p, i)
            prompt = prompt_tokens(req) * call.fanout
            system = len(p.system_prompt.split()) + 4
            shared = call.fanout if p.app in seen_prefixes else call.fanout - 1
            prompt -= system * shared  # a shared prefix needs computing once
            seen_prefixes.add(p.app)
            prompt_total += prompt
    decode_total = sum(p.output_tokens for p in trace)
    peak_decode = max_batch / (costs["t0"] + costs["b"] * max_batch)
    peak_prefill = 1 / costs["a"]
    work = prompt_total / peak_prefill + decode_total / peak_decode
    return {"critical_path": critical, "work": work, "bound": max(critical, work)}


def study(agents: int, seed: int, max_batch: int, arrival_rate: float, costs: dict[str, float], data_dir: Path) -> dict[str, Any]:
    trace = make_trace(agents=agents, seed=seed, arrival_rate=arrival_rate)
    alone = {p.agent: alone_time(p, costs) for p in trace}
    bound = lower_bound(trace, costs, max_batch)
    rows = []
    for setup in setups(max_batch):
        result = run_virtual(_run_setup(setup, trace, max_batch, costs, data_dir / setup.key))
        rec: _Recorder = result["rec"]
        completion = [rec.completion[p.agent] for p in trace]
        slowdown = [rec.completion[p.agent] / alone[p.agent] for p in trace]
        rows.append(
            {
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
                "efficiency": bound["bound"] / result["makespan"],
                "wall_seconds": result["wall_seconds"],
                "completion": completion,
            }
        )
    by = {r["setup"]: r for r in rows}
    ratios = {
        "plas_vs_fifo_mean": by["c"]["completion_mean"] / by["f"]["completion_mean"],
        "plas_vs_fifo_p50": by["c"]["completion_p50"] / by["f"]["completion_p50"],
        "plas_vs_fifo_p99": by["c"]["completion_p99"] / by["f"]["completion_p99"],
        "aios_best_vs_native_makespan": by["a"]["makespan"] / min(r["makespan"] for r in rows if r["setup"] in "cdefg"),
        "aios_best_vs_native_mean": by["a"]["completion_mean"] / min(r["completion_mean"] for r in rows if r["setup"] in "cdefg"),
    }
    return {
        "config": {"agents": agents, "seed": seed, "max_batch": max_batch, "arrival_rate": arrival_rate, "costs": costs},
        "trace": {
            "programs": len(trace),
            "calls": sum(c.fanout for p in trace for c in p.calls),
            "output_tokens": sum(p.output_tokens for p in trace),
            "calls_max": max(len(p.calls) for p in trace),
        },
        "lower_bound": bound,
        "rows": rows,
        "ratios": ratios,
    }


def print_report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, Console().width))
    cfg, trace = result["config"], result["trace"]
    table = Table(
        title=f"Scheduler study on the sim core: {trace['programs']} agents, {trace['calls']} LLM calls, "
        f"{trace['output_tokens']} output tokens (seed {cfg['seed']}, batch {cfg['max_batch']}, virtual time)"
    )
    columns = [
        ("setup", "setup"), ("label", ""), ("makespan", "makespan s"), ("agents_per_s", "agents/s"), ("completion_mean", "mean s"),
        ("completion_p50", "p50 s"), ("completion_p99", "p99 s"), ("queue_wait_share", "wait share"), ("slowdown_mean", "slowdown"),
        ("jain_fairness", "Jain"), ("mean_batch", "batch"), ("prefix_hit_rate", "prefix hit"), ("efficiency", "efficiency"),
    ]
    for _, header in columns:
        table.add_column(header, justify="left" if header in ("setup", "") else "right", overflow="fold")
    for row in result["rows"]:
        cells = []
        for key, _ in columns:
            value = row[key]
            cells.append(f"{value:.3f}" if isinstance(value, float) else str(value))
        table.add_row(*cells)
    console.print(table)
    lb, ratios = result["lower_bound"], result["ratios"]
    console.print(
        f"lower bound {lb['bound']:.1f} s (critical path {lb['critical_path']:.1f} s, work at peak rates {lb['work']:.1f} s); "
        "efficiency = lower bound / makespan"
    )
    console.print(
        f"PLAS vs FIFO (f vs c), completion time ratio FIFO/PLAS (above 1: PLAS faster): mean {ratios['plas_vs_fifo_mean']:.2f}x, "
        f"p50 {ratios['plas_vs_fifo_p50']:.2f}x, p99 {ratios['plas_vs_fifo_p99']:.2f}x; "
        f"best AIOS setup vs framework-native: makespan {ratios['aios_best_vs_native_makespan']:.2f}x, mean completion "
        f"{ratios['aios_best_vs_native_mean']:.2f}x"
    )


def markdown(result: dict[str, Any], command: str = "") -> str:
    """The study as Markdown tables (for docs/benchmarks.md)."""
    cfg, trace, lb, ratios = result["config"], result["trace"], result["lower_bound"], result["ratios"]
    lines = [
        f"**{trace['programs']} agents, {trace['calls']} LLM calls, {trace['output_tokens']} output tokens; "
        f"seed {cfg['seed']}, {cfg['max_batch']} engine slots, {cfg['arrival_rate']} agents/s arriving; virtual time**",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        "| setup | makespan s | agents/s | completion mean s | p50 s | p99 s | queue-wait share | mean slowdown | Jain | mean batch | prefix hit | efficiency |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| ({r['setup']}) {r['label']} | {r['makespan']:.0f} | {r['agents_per_s']:.3f} | {r['completion_mean']:.1f} | "
            f"{r['completion_p50']:.1f} | {r['completion_p99']:.0f} | {100 * r['queue_wait_share']:.0f}% | {r['slowdown_mean']:.1f} | "
            f"{r['jain_fairness']:.2f} | {r['mean_batch']:.2f} | {100 * r['prefix_hit_rate']:.0f}% | {r['efficiency']:.2f} |"
        )
    lines += [
        "",
        f"Lower bound {lb['bound']:.0f} s (slowest program alone {lb['critical_path']:.0f} s; all work at peak rates {lb['work']:.0f} s). "
        f"PLAS vs FIFO (FIFO / PLAS, above 1: PLAS faster): mean **{ratios['plas_vs_fifo_mean']:.2f}x**, "
        f"p50 {ratios['plas_vs_fifo_p50']:.2f}x, p99 **{ratios['plas_vs_fifo_p99']:.2f}x**. Best AIOS setup vs framework-native: "
        f"makespan {ratios['aios_best_vs_native_makespan']:.2f}x, mean completion {ratios['aios_best_vs_native_mean']:.2f}x.",
    ]
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
    labels = [f"({r['setup']}) {r['label']}" for r in rows]
    x = range(len(rows))
    ax1.bar([i - 0.2 for i in x], [r["completion_mean"] for r in rows], width=0.4, label="mean")
    ax1.bar([i + 0.2 for i in x], [r["completion_p99"] for r in rows], width=0.4, label="p99")
    ax1.set_xticks(list(x), [f"({r['setup']})" for r in rows])
    ax1.set_ylabel("agent completion time (s)")
    ax1.set_yscale("log")
    ax1.set_title("Per-agent completion time by setup")
    ax1.legend()
    for r, label in zip(rows, labels):
        xs = sorted(r["completion"])
        ax2.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aios.bench.studies.schedulers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-batch", type=int, default=8, help="engine slots (the embedded core default)")
    parser.add_argument("--arrival-rate", type=float, default=0.3, help="agents arriving per second (Poisson)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print an earlier result file as Markdown tables and exit")
    args = parser.parse_args(argv)
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="aios-study-") as tmp:
        result = study(args.agents, args.seed, args.max_batch, args.arrival_rate, GEMMA_COSTS, Path(tmp))
    print_report(result)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"schedulers-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)))
    png = plot(result, args.out / f"schedulers-{stamp}.png")
    print(f"results: {json_path}" + (f", plot: {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
