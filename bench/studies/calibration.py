"""Is the sim core a faithful model of the embedded engine? The scheduler study's setups on both, side by side.

    python -m aios.bench.studies.calibration [--agents 8] [--seed 0] [--max-batch 8] [--threads 1]
    python -m aios.bench.studies.calibration --fit-only --clock cpu --core-option even_logits=false \
        --profile-out bench/studies/profiles/gemma3-270m-cpu1.json
    python -m aios.bench.studies.calibration --fit-only --clock cpu --core-option even_logits=false \
        --core-option fast_head_rows=0 --profile-out bench/studies/profiles/gemma3-270m-cpu1-plain.json

1. Fit the sim's step cost ``t0 + a * prefill_tokens + b * batch_size + c *
   context_tokens`` to the llamacpp core: time decode steps at batch sizes 1,
   2, 4, 8 and three context lengths (-> t0, b, c by non-negative least
   squares) and prefill steps of a few prompt lengths (-> a). ``--fit-only``
   stops here and writes the profile the scheduler study loads.
   ``--core-option`` sets the core's options: the shipped profiles are fitted
   with guessed tokens off (``even_logits=false``), because a step with guessed
   rows costs what rows the calibration does not count and the line no longer
   fits (R² 0.36 with them); the sim then credits AIOS with none of their gain.
   With ``fast_head_rows=0`` too, llama.cpp computes every logits row itself:
   the engine as llama-server runs it.
2. Run a small agent trace (the scheduler study's generator, scaled down)
   under every setup of :mod:`aios.bench.studies.schedulers` (a..h) on the real llamacpp
   core, in real time.
3. Replay the same trace on the sim core with the fitted costs, in virtual
   time, each call generating exactly the tokens it generated for real and
   each prompt having its real token count; compare predicted and measured
   makespan, mean and p99 completion time and mean batch, per setup.

If the errors are small, the sim study at hundreds or thousands of agents is
a prediction of the real engine; where they are not, the table says by how much.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aios.bench.metrics import percentile
from aios.bench.result_stamps import claim_stamp
from aios.bench.studies.cli_options import key_value_options
from aios.bench.studies.schedulers import Setup, setups
from aios.bench.studies.workload import Program, make_trace
from aios.bench.suites.agents.llama_cpp_server import wheel_record

from aios_core.clock import run_virtual
from aios_core.cores.base import Generation
from aios_core.cores.batching import StepTiming
from aios_core.kernel import Kernel
from aios_core.syscalls import LLMRequest, LLMSyscall

# --------------------------------------------------------------------------- 1. fitting the step cost


@dataclass
class StepSample:
    seconds: float
    batch: int
    kind: str  # "decode" | "prefill"
    prompt_tokens: int = 0
    #: tokens of context the batch's sequences attend to (prompt + generated so far, summed)
    context: int = 0
    #: CPU time the process spent in the step (with one llama.cpp thread: the step's time on an idle core)
    cpu_seconds: float = 0.0


def _timed_steps(core: Any, samples: list[StepSample]) -> None:
    """Record every engine step's duration, batch size and context (through the core's public step hook)."""

    last = [time.process_time()]

    def record(step: StepTiming) -> None:
        # CPU the process spent since the previous step ended: this step's compute (in the engine thread) plus
        # the loop's bookkeeping between steps, which is small; wall time would count other processes too
        now = time.process_time()
        cpu, last[0] = now - last[0], now
        samples.append(StepSample(step.seconds, step.batch, "prefill" if step.prefill else "decode", context=step.context, cpu_seconds=cpu))

    core.observe_steps(record)


def _fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = c + m x; returns (c, m, r2)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    m = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    c = my - m * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (c + m * x)) ** 2 for x, y in zip(xs, ys))
    return c, m, (1 - ss_res / ss_tot) if ss_tot else 1.0


def fit_decode(groups: list[tuple[int, float, float]]) -> tuple[float, float, float, float]:
    """Least squares ``seconds = t0 + b * batch + c * context`` over (batch, context, seconds); returns t0, b, c, R².

    Non-negative: a cost is never negative, and clipping an unconstrained fit
    afterwards would leave the other terms biased, so every subset of the three
    terms is fitted and the best fit with no negative term wins (exact for three terms).
    """
    import itertools

    import numpy as np

    x = np.array([[1.0, k, ctx] for k, ctx, _ in groups])
    y = np.array([sec for _, _, sec in groups])
    best: tuple[float, np.ndarray] | None = None
    for size in (3, 2, 1):
        for cols in itertools.combinations(range(3), size):
            sol, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if (sol < 0).any():
                continue
            coef = np.zeros(3)
            coef[list(cols)] = sol
            residual = float(((y - x @ coef) ** 2).sum())
            if best is None or residual < best[0] - 1e-15:
                best = (residual, coef)
    residual, coef = best if best is not None else (float((y**2).sum()), np.zeros(3))
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - residual / ss_tot if ss_tot else 1.0
    return float(coef[0]), float(coef[1]), float(coef[2]), r2


async def fit_costs(make_core: Any, *, batches: tuple[int, ...] = (1, 2, 4, 8), decode_tokens: int = 24,
                    contexts: tuple[int, ...] = (0, 120, 300), prompts: tuple[int, ...] = (24, 72, 144),
                    clock: str = "wall") -> dict[str, Any]:
    """Measure an engine and fit t0, b, c (decode steps at each batch size and context length) and a (prefill).

    Each decode configuration starts ``batch`` sequences whose prompts carry
    about ``context`` filler words (distinct from their first token, so nothing
    is shared), and times their decode steps; the per-configuration medians are
    fitted, so one slow step does not tilt the fit. ``clock="cpu"`` times the
    CPU the process spent instead of the wall clock: with one llama.cpp thread
    that is the step's time on an idle core, even on a machine busy with other
    work (where wall time measures the other work too).
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")

    def took(sample: StepSample) -> float:
        return sample.cpu_seconds if clock == "cpu" else sample.seconds

    core = make_core(0)
    await core.start()
    samples: list[StepSample] = []
    _timed_steps(core, samples)
    decode: dict[tuple[int, int], list[StepSample]] = {}
    prefill: dict[int, float] = {}
    try:
        async def generate(request: LLMRequest, gid: str) -> None:
            async for chunk in core.generate(Generation(id=gid, request=request)):
                if chunk.finish_reason is not None:
                    return

        for ctx in contexts:
            filler = " ".join(f"w{j}" for j in range(ctx))
            for k in batches:
                samples.clear()
                requests = [
                    LLMRequest(messages=[{"role": "user", "content": f"Count upwards from {100 * i + k + ctx}: {filler}"}],
                               max_tokens=decode_tokens, temperature=0.0)
                    for i in range(k)
                ]
                await asyncio.gather(*(generate(r, f"fit-d{ctx}-{k}-{i}") for i, r in enumerate(requests)))
                decode[(k, ctx)] = [s for s in samples if s.kind == "decode" and s.batch == k]
        for p in prompts:
            words = " ".join(f"w{i}" for i in range(p))
            request = LLMRequest(messages=[{"role": "user", "content": words}], max_tokens=1, temperature=0.0)
            n = core.count_tokens(request)
            samples.clear()
            await generate(request, f"fit-p{p}")
            prefill[n] = sum(took(s) for s in samples)
    finally:
        await core.stop()
    groups = [
        (k, statistics.median(s.context for s in v), statistics.median(took(s) for s in v))
        for (k, _), v in sorted(decode.items()) if v
    ]
    wall = {(k, ctx): statistics.median(s.seconds for s in v) for (k, ctx), v in sorted(decode.items()) if v}
    t0, b, c, r2_decode = fit_decode(groups)
    # a prefill step of n prompt tokens (batch 1) costs t0 + a n + b
    a_values = [(seconds - t0 - b) / n for n, seconds in prefill.items()]
    pc, a, r2_prefill = _fit_line(list(prefill), list(prefill.values()))
    return {
        "t0": t0,
        "a": max(a, 0.0),
        "b": b,
        "c": c,
        "r2_decode": r2_decode,
        "r2_prefill": r2_prefill,
        "decode_groups": [
            {"batch": k, "context_tokens": ctx, "median_step_s": sec, "median_wall_s": w}
            for (k, ctx, sec), w in zip(groups, wall.values())
        ],
        "decode_median_step_s": {k: statistics.median(sec for kk, _, sec in groups if kk == k) for k in sorted({g[0] for g in groups})},
        "prefill_step_s": prefill,
        "a_per_prompt": a_values,
        "prefill_intercept": pc,
        "clock": clock,
    }


def profile(costs: dict[str, Any], *, name: str, command: str, config: dict[str, Any], load: tuple[float, ...] | list[float]) -> dict[str, Any]:
    """The JSON profile the scheduler study loads (``--profile``): the fitted costs and how they were measured.

    ``load``: the load average taken before the measurement (taken after it, it is the measurement's own).
    """
    return {
        "kind": "aios-sim-profile",
        "name": name,
        "command": command,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_at_start": [round(x, 2) for x in load],
        "config": config,
        "costs": {k: costs[k] for k in ("t0", "a", "b", "c")} | {"restore_cost": costs.get("restore_cost", 0.0005)},
        "fit": {k: v for k, v in costs.items() if k not in ("t0", "a", "b", "c", "restore_cost")},
        "model": "step = t0 + a * prefill_tokens + b * batch_size + c * context_tokens (seconds)",
    }


# --------------------------------------------------------------------------- 2./3. running a trace


@dataclass
class CallShape:
    """What one call looked like for real: its prompt's token count (total and system part) and its output."""

    prompt_tokens: int
    system_tokens: int
    output_tokens: int


@dataclass
class Run:
    completion: dict[str, float] = field(default_factory=dict)
    shapes: dict[tuple[str, int, int], CallShape] = field(default_factory=dict)
    makespan: float = 0.0
    mean_batch: float = 0.0
    snapshots: int = 0
    restore_seconds: float = 0.0
    restores: int = 0


RequestFor = Any  # (program, call index, fanout index) -> LLMRequest


def real_request(program: Program, i: int) -> LLMRequest:
    """The call on the real engine: its application's system prompt, then an input of its own.

    The input opens with the program and call, so that nothing after the
    system prompt is shared: llama.cpp's cache matches tokens, the sim's whole
    messages, and inputs of the same filler words would let the real engine
    share what the sim cannot (the sim's cached setups then seemed 30-60 %
    slower than the engine).
    """
    call = program.calls[i]
    words = f"Task {program.agent}, call {i}: " + " ".join(["step"] * call.prompt_words)
    return LLMRequest(
        messages=[{"role": "system", "content": program.system_prompt}, {"role": "user", "content": words}],
        max_tokens=call.output_tokens,
        temperature=0.0,
        seed=0,
    )


def sim_request(program: Program, i: int, shape: CallShape) -> LLMRequest:
    """A request the sim sees with the real call's token counts: same system prompt per app (for prefix sharing)."""
    system_words = max(1, shape.system_tokens - 4)
    user_words = max(1, shape.prompt_tokens - shape.system_tokens - 4)
    return LLMRequest(
        messages=[{"role": "system", "content": " ".join([f"app{program.app}"] * system_words)}, {"role": "user", "content": " ".join(["w"] * user_words)}],
        max_tokens=program.calls[i].output_tokens,
        extra={"sim_tokens": shape.output_tokens},
    )


async def _run_trace(setup: Setup, trace: list[Program], core: Any, request_for: Any, data_dir: Path, max_batch: int) -> Run:
    """The scheduler study's setups, on any core: direct (a, b) or through a kernel (c..h)."""
    run = Run()
    loop = asyncio.get_running_loop()
    first_arrival = min(p.arrival for p in trace)
    t_start = loop.time()

    async def program_direct(p: Program, slots: asyncio.Semaphore) -> None:
        await asyncio.sleep(p.arrival - first_arrival)
        start = loop.time()

        async def one(i: int, j: int) -> None:
            request = request_for(p, i, j)
            async with slots:
                out = 0
                async for chunk in core.generate(Generation(id=f"{p.agent}-{i}-{j}", request=request, agent=p.agent)):
                    out += chunk.tokens
                    if chunk.finish_reason is not None:
                        break
            run.shapes[(p.agent, i, j)] = _shape(core, request, out)

        for i, call in enumerate(p.calls):
            await asyncio.gather(*(one(i, j) for j in range(call.fanout)))
            if i + 1 < len(p.calls):
                await asyncio.sleep(call.tool_seconds)
        run.completion[p.agent] = loop.time() - start

    async def program_kernel(kernel: Kernel, p: Program) -> None:
        await asyncio.sleep(p.arrival - first_arrival)
        start = loop.time()
        kernel.register_agent(p.agent)
        remaining = p.output_tokens
        for i, call in enumerate(p.calls):
            requests = [request_for(p, i, j) for j in range(call.fanout)]
            results = await asyncio.gather(*(kernel.acall(LLMSyscall(agent=p.agent, request=r, hint_tokens=remaining)) for r in requests))
            for j, (r, res) in enumerate(zip(requests, results)):
                run.shapes[(p.agent, i, j)] = _shape(core, r, res.usage.completion_tokens)
            remaining -= call.output_tokens * call.fanout
            if i + 1 < len(p.calls):
                await asyncio.sleep(call.tool_seconds)
        run.completion[p.agent] = loop.time() - start
        kernel.end_agent(p.agent)

    if setup.scheduler is None:
        await core.start()
        try:
            slots = asyncio.Semaphore(setup.direct_slots)
            await asyncio.gather(*(program_direct(p, slots) for p in trace))
        finally:
            stats = core.stats()
            await core.stop()
    else:
        kernel = Kernel(cores=[core], scheduler=setup.scheduler, scheduler_options=dict(setup.options), data_dir=data_dir,
                        entry_point_plugins=False, max_queued=1_000_000)
        async with kernel:
            await asyncio.gather(*(program_kernel(kernel, p) for p in trace))
            stats = core.stats()
    run.makespan = loop.time() - t_start
    run.mean_batch = stats.mean_batch
    run.snapshots = stats.snapshots
    run.restores = stats.restores
    run.restore_seconds = float(stats.extra.get("restore_seconds", 0.0))
    return run


def _shape(core: Any, request: LLMRequest, output_tokens: int) -> CallShape:
    total = core.count_tokens(request)
    if request.messages[0].role == "system":
        without = core.count_tokens(request.model_copy(update={"messages": request.messages[1:]}))
        system = max(1, total - without)
    else:
        system = 0
    return CallShape(prompt_tokens=total, system_tokens=system, output_tokens=max(1, output_tokens))


def _summary(run: Run, trace: list[Program]) -> dict[str, float]:
    values = [run.completion[p.agent] for p in trace]
    return {
        "makespan": run.makespan,
        "completion_mean": statistics.fmean(values),
        "completion_p99": percentile(values, 99),
        "mean_batch": run.mean_batch,
        "snapshots": run.snapshots,
    }


def small_trace(agents: int, seed: int, arrival_rate: float, *, max_tokens: int = 80) -> list[Program]:
    """The scheduler study's generator, scaled down to what a real engine runs in minutes."""
    return make_trace(
        agents=agents, seed=seed, arrival_rate=arrival_rate, apps=2, system_words=40, max_calls=4,
        min_tokens=min(12, max_tokens), max_tokens=max_tokens, tool_mean=0.3, parallel_share=0.25, max_fanout=3,
    )


def calibrate(
    *, agents: int, seed: int, max_batch: int, threads: int, n_ctx: int, arrival_rate: float, progress: Any = None,
    make_core: Any = None, trace: list[Program] | None = None,
) -> dict[str, Any]:
    """``make_core(prefix_slots)`` builds the engine to calibrate against (default: the llamacpp core)."""
    from aios_core.cores.sim import SimCore, SimCosts

    if make_core is None:
        from aios_core.cores.llamacpp import LlamaCppCore

        def make_core(prefix_slots: int) -> Any:
            return LlamaCppCore(n_ctx=n_ctx, max_batch=max_batch, n_threads=threads, seed=seed, prefix_slots=prefix_slots)

    trace = trace if trace is not None else small_trace(agents, seed, arrival_rate)
    note = progress or (lambda msg: None)
    note("fitting the step cost on the llamacpp core")
    costs = asyncio.run(fit_costs(make_core, batches=tuple(k for k in (1, 2, 4, 8) if k <= max_batch)))
    rows = []
    restore_costs = []
    with tempfile.TemporaryDirectory(prefix="aios-calibration-") as tmp:
        real_runs: dict[str, Run] = {}
        for setup in setups(max_batch):
            note(f"real run, setup ({setup.key}) {setup.label}")
            core = make_core(4 if setup.prefix_sharing else 0)
            real_runs[setup.key] = asyncio.run(
                _run_trace(setup, trace, core, lambda p, i, j: real_request(p, i), Path(tmp) / f"real-{setup.key}", max_batch)
            )
            run = real_runs[setup.key]
            if run.restores:
                restore_costs.append(run.restore_seconds / run.restores)
        restore_cost = statistics.fmean(restore_costs) if restore_costs else 0.0005
        sim_costs = SimCosts(t0=costs["t0"], a=costs["a"], b=costs["b"], c=costs["c"], restore_cost=restore_cost)
        for setup in setups(max_batch):
            real = real_runs[setup.key]
            note(f"sim prediction, setup ({setup.key})")
            sim = SimCore(max_batch=max_batch, kv_capacity=n_ctx, context_length=n_ctx, prefix_cache=4 if setup.prefix_sharing else 0, seed=seed, costs=sim_costs)
            predicted = run_virtual(
                _run_trace(setup, trace, sim, lambda p, i, j, r=real: sim_request(p, i, r.shapes[(p.agent, i, j)]), Path(tmp) / f"sim-{setup.key}", max_batch)
            )
            m, s = _summary(real, trace), _summary(predicted, trace)
            rows.append(
                {
                    "setup": setup.key,
                    "label": setup.label,
                    "measured": m,
                    "predicted": s,
                    "error": {k: (s[k] - m[k]) / m[k] if m[k] else None for k in ("makespan", "completion_mean", "completion_p99")},
                }
            )
    return {
        "kind": "aios-bench-calibration",
        "config": {
            "agents": agents, "seed": seed, "max_batch": max_batch, "threads": threads, "n_ctx": n_ctx, "arrival_rate": arrival_rate,
            "engine": make_core(0).kind,
        },
        "trace": {
            "programs": len(trace),
            "calls": sum(c.fanout for p in trace for c in p.calls),
            "output_tokens_planned": sum(p.output_tokens for p in trace),
        },
        "fitted_costs": {**costs, "restore_cost": restore_cost},
        "rows": rows,
        "mean_abs_error": {
            k: statistics.fmean(abs(r["error"][k]) for r in rows if r["error"][k] is not None) for k in ("makespan", "completion_mean", "completion_p99")
        },
    }


# --------------------------------------------------------------------------- report


def print_report(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    c, cfg = result["fitted_costs"], result["config"]
    table = Table(
        title=f"Sim vs real: {result['trace']['programs']} agents, {result['trace']['calls']} calls on the {cfg.get('engine', 'llamacpp')} core "
        f"(batch {cfg['max_batch']}, {cfg['threads']} thread(s)); sim step cost fitted: t0={c['t0'] * 1000:.1f} ms, "
        f"a={c['a'] * 1000:.3f} ms/prompt token, b={c['b'] * 1000:.2f} ms/sequence, c={c.get('c', 0.0) * 1e6:.2f} µs/context token",
        title_justify="left",
    )
    for col in ("setup", "", "makespan real s", "sim s", "err", "mean real s", "sim s", "err", "p99 real s", "sim s", "err", "batch real", "sim"):
        table.add_column(col, justify="left" if col in ("setup", "") else "right")
    for r in result["rows"]:
        m, s, e = r["measured"], r["predicted"], r["error"]
        table.add_row(
            r["setup"], r["label"],
            f"{m['makespan']:.1f}", f"{s['makespan']:.1f}", f"{100 * e['makespan']:+.0f}%",
            f"{m['completion_mean']:.1f}", f"{s['completion_mean']:.1f}", f"{100 * e['completion_mean']:+.0f}%",
            f"{m['completion_p99']:.1f}", f"{s['completion_p99']:.1f}", f"{100 * e['completion_p99']:+.0f}%",
            f"{m['mean_batch']:.2f}", f"{s['mean_batch']:.2f}",
        )
    console.print(table)
    mae = result["mean_abs_error"]
    console.print(
        f"mean absolute error of the sim's prediction: makespan {100 * mae['makespan']:.0f}%, mean completion "
        f"{100 * mae['completion_mean']:.0f}%, p99 completion {100 * mae['completion_p99']:.0f}%; "
        f"fit quality R² decode {c['r2_decode']:.2f}, prefill {c['r2_prefill']:.2f}"
    )


def plot(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = result["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, key, title in zip(axes, ("makespan", "completion_mean", "completion_p99"), ("makespan", "mean completion", "p99 completion")):
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r["measured"][key] for r in rows], width=0.4, label="measured (llamacpp)", color="#1b9e77")
        ax.bar([x + 0.2 for x in xs], [r["predicted"][key] for r in rows], width=0.4, label="predicted (sim, fitted)", color="#7570b3")
        ax.set_xticks(list(xs), [f"({r['setup']})" for r in rows])
        ax.set_ylabel("seconds")
        ax.set_title(f"{title}: real engine vs sim")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_profile(path: Path, data: dict[str, Any]) -> Path:
    """Write a sim profile where the study can load it (the directory made if missing: a full calibration
    writes its profile after minutes of timing, and must not fail then on a path it could have made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    parser = argparse.ArgumentParser(prog="python -m aios.bench.studies.calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--arrival-rate", type=float, default=1.0, help="agents arriving per second (Poisson)")
    parser.add_argument("--fit-only", action="store_true", help="only fit the step costs and write the profile (minutes)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time steps by the wall clock, or by the CPU the process spent (one thread on a busy machine)")
    parser.add_argument("--profile-out", type=Path, default=None,
                        help="write the fitted costs as a sim profile here (the study's default: bench/studies/profiles/gemma3-270m-cpu1.json)")
    parser.add_argument(
        "--core-option", action="append", default=[], metavar="KEY=VALUE",
        help="an option of the llamacpp core (repeatable; JSON values), e.g. even_logits=false fast_head_rows=0 for the "
             "engine as llama-server runs it (every logits row from llama.cpp's output layer, one token a step)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    core_options = dict(key_value_options(parser, "--core-option", args.core_option))
    console = Console(width=max(160, Console().width))
    command = "python -m aios.bench.studies.calibration " + " ".join(argv if argv is not None else sys.argv[1:])
    config = {"engine": "llamacpp", "threads": args.threads, "n_ctx": args.n_ctx, "max_batch": args.max_batch, "seed": args.seed,
              "core_options": core_options, "llama_cpp": wheel_record()}
    from aios_core.cores.llamacpp import LlamaCppCore
    from aios_core.errors import ConfigError

    def make_core(prefix_slots: int) -> Any:
        try:
            return LlamaCppCore(n_ctx=args.n_ctx, max_batch=args.max_batch, n_threads=args.threads, seed=args.seed,
                                prefix_slots=prefix_slots, **core_options)
        except (TypeError, ConfigError) as exc:  # an option the core does not have, or a value it refuses
            parser.error(f"--core-option: {exc}")

    make_core(0)  # a bad option is a usage error before minutes of loading and timing
    load = os.getloadavg()
    if args.fit_only:
        console.log("fitting the step cost on the llamacpp core")
        costs = asyncio.run(fit_costs(make_core, batches=tuple(k for k in (1, 2, 4, 8) if k <= args.max_batch), clock=args.clock))
        result = profile(costs, name=f"llamacpp-{args.threads}thread", command=command, config=config, load=load)
        if args.profile_out is not None:
            path = write_profile(args.profile_out, result)
        else:
            stamp, claim = claim_stamp(args.out, "profile")
            with claim:
                path = write_profile(args.out / f"profile-{stamp}.json", result)
        c = result["costs"]
        console.print(
            f"t0={c['t0'] * 1000:.1f} ms, a={c['a'] * 1000:.3f} ms/prompt token, b={c['b'] * 1000:.2f} ms/sequence, "
            f"c={c['c'] * 1e6:.2f} µs/context token (R² decode {costs['r2_decode']:.3f}, prefill {costs['r2_prefill']:.3f}); profile: {path}"
        )
        return 0
    result = calibrate(
        agents=args.agents, seed=args.seed, max_batch=args.max_batch, threads=args.threads, n_ctx=args.n_ctx,
        arrival_rate=args.arrival_rate, progress=lambda msg: console.log(msg), make_core=make_core,
    )
    result["profile"] = profile(result["fitted_costs"], name=f"llamacpp-{args.threads}thread", command=command, config=config, load=load)
    print_report(result, console)
    stamp, claim = claim_stamp(args.out, "calibration")
    with claim:
        path = args.out / f"calibration-{stamp}.json"
        path.write_text(json.dumps(result, indent=2, default=str))
        png = plot(result, path.with_suffix(".png"))
    if args.profile_out is not None:
        write_profile(args.profile_out, result["profile"])
    console.print(f"results: {path}" + (f", plot: {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
