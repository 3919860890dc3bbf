"""The with/without harness: the same agents on the same tasks, on two servers without AIOS and with AIOS, rotating.

    aios bench humaneval --framework langchain --agents 16 --model local [--full] [--limit N]
    python -m aios.bench.suites humaneval ...     (the same; also mint, gaia, swebench)

One process runs the setups (``--setups``, all three by default) on the same
task selection with the same seed, the same prompts and the same sampling
(greedy, one max_tokens), in rounds that rotate the order (round 1: serial,
llama-server, AIOS; round 2: llama-server, AIOS, serial; ...) so that slow
drifts of a shared machine hit them alike. Reported values are medians over
rounds; ratios are "baseline / AIOS" (above 1: AIOS is faster), against
llama-server first. Agreement: the share of agent replies whose text is the
same in every setup (greedy decoding; with a model that solves few tasks, the
correctness check).

* without AIOS, ``llama_server``: the framework's own concurrency (``--agents``
  at once), each agent calling llama.cpp's ``llama-server`` (``-np`` = agents,
  continuous batching, its prompt caches as shipped): the baseline that counts;
* without AIOS, ``native``: the same against llama-cpp-python's server, which
  serves one request at a time (context: what the first numbers compared with);
  tools run in a sandboxed subprocess the agent starts.
* with AIOS: the framework patched with ``aios.patch``; its calls become
  syscalls scheduled (``--scheduler``, PLAS by default) onto the kernel's core
  (the llamacpp core, continuous batching); tools run through the tool manager.

Scoring happens after each round, outside the timed part, in a sandbox.
Results: a table, a JSON file and a PNG in ``--out``. A suite that was not
run has no score anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import platform
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aios.bench.metrics import per_round_ratios, percentile
from aios.bench.suites.agents import FRAMEWORKS, get_framework
from aios.bench.suites.agents.backends import Backend, LocalBackend, SimBackend
from aios.bench.suites.agents.base import Endpoint, Framework, Sampling
from aios.bench.suites.calls import KernelCallRecorder, summarize_calls
from aios.bench.suites.modes import BASELINES, SETUP_LABELS, SETUPS, AIOSMode, Mode, NativeMode, round_order
from aios.bench.suites.tasks import get_suite
from aios.bench.suites.tasks.base import Episode, LoadOptions, Suite, Task, TaskSet
from aios.bench.suites.tasks.sandbox import LocalToolBox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    suite: str
    framework: str = "sdk"
    agents: int = 8
    model: str = "local"
    rounds: int = 2
    seed: int = 0
    max_tokens: int = 384
    n_ctx: int = 16384
    threads: int = 1
    max_batch: int | None = None
    scheduler: str = "plas"
    full: bool = False
    limit: int | None = None
    data: Path | None = None
    subsets: tuple[str, ...] = ()
    out: Path = Path("bench/results")
    plots: bool = True
    model_path: str | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    setups: tuple[str, ...] = SETUPS

    @property
    def batch(self) -> int:
        return self.max_batch or min(self.agents, 16)


# --------------------------------------------------------------------------- one round


@dataclass
class AgentRun:
    task_id: str
    agent: str
    start: float
    end: float = 0.0
    replies: int = 0
    #: the agent's replies in order: compared across setups (agreement)
    texts: list[str] = field(default_factory=list)
    error: str | None = None
    passed: bool = False
    detail: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


async def _send(framework: Framework, agent: Any, text: str) -> str:
    if framework.threaded:
        return await asyncio.to_thread(agent.send, text)  # type: ignore[no-any-return]
    return await agent.send(text)  # type: ignore[no-any-return]


async def _create(framework: Framework, mode: Mode, name: str, system: str | None) -> Any:
    spec = mode.spec(name, system)
    if framework.threaded:
        return await asyncio.to_thread(framework.create, spec)
    return framework.create(spec)


async def _close(framework: Framework, agent: Any) -> None:
    """Agents holding processes (Open-Interpreter's Jupyter kernel) release them; outside the timed part."""
    close = getattr(agent, "close", None)
    if close is None:
        return
    try:
        if framework.threaded:
            await asyncio.to_thread(close)
        else:
            result = close()
            if asyncio.iscoroutine(result):
                await result
    except Exception:  # noqa: BLE001
        log.exception("closing an agent failed")


async def _run_agent(mode: Mode, suite: Suite, framework: Framework, task: Task, name: str, t0: float) -> tuple[AgentRun, Episode]:
    episode = suite.episode(task, mode.toolbox(name))
    run = AgentRun(task_id=task.task_id, agent=name, start=time.perf_counter() - t0)
    with mode.agent(name):
        agent = None
        try:
            agent = await _create(framework, mode, name, episode.system)
            text = episode.first_message()
            for _ in range(episode.max_replies):
                reply = await _send(framework, agent, text)
                run.replies += 1
                run.texts.append(reply if isinstance(reply, str) else str(reply))
                step = await episode.step(reply)
                if step.done or step.observation is None:
                    break
                text = step.observation
        except Exception as exc:  # noqa: BLE001 - one agent's failure is recorded, the others go on
            run.error = f"{type(exc).__name__}: {str(exc)[:300]}"
            log.warning("agent %s on %s failed: %s", name, task.task_id, run.error)
        run.end = time.perf_counter() - t0
        await _close(framework, agent)
    return run, episode


async def run_round(
    index: int, mode: Mode, suite: Suite, taskset: TaskSet, framework: Framework, options: Options, progress: Any = None
) -> dict[str, Any]:
    slots = asyncio.Semaphore(options.agents)
    bar = progress.add_task(f"round {index + 1} · {mode.label}", total=len(taskset.tasks)) if progress is not None else None
    t0 = time.perf_counter()

    async def one(i: int, task: Task) -> tuple[AgentRun, Episode]:
        async with slots:
            name = f"{framework.name.replace('-', '_')}_{mode.key}_r{index + 1}_{i:03d}"
            result = await _run_agent(mode, suite, framework, task, name, t0)
        if progress is not None:
            progress.advance(bar)
        return result

    mode.begin()
    try:
        results = await asyncio.gather(*(one(i, t) for i, t in enumerate(taskset.tasks)))
    finally:
        mode.end()
        await framework.end_round()
    runs = [r for r, _ in results]
    makespan = max(r.end for r in runs) - min(r.start for r in runs)
    calls = mode.take_calls()
    engine = mode.engine_stats()

    # scoring: after the timed part, in the benchmark's own sandbox
    sandbox = LocalToolBox(parallel=2)
    score_bar = progress.add_task(f"round {index + 1} · scoring", total=len(results)) if progress is not None else None

    async def judge(run: AgentRun, episode: Episode) -> None:
        verdict = await suite.score(episode, sandbox)
        run.passed, run.detail = verdict.passed, verdict.detail
        if progress is not None:
            progress.advance(score_bar)

    await asyncio.gather(*(judge(r, e) for r, e in results))
    seconds = [r.seconds for r in runs]
    call_summary = summarize_calls(calls)
    passed = sum(r.passed for r in runs)
    return {
        "round": index + 1,
        "setup": mode.key,
        "label": mode.label,
        "tasks": len(runs),
        "passed": passed,
        "success_rate": passed / len(runs),
        "errors": sum(1 for r in runs if r.error),
        "makespan": makespan,
        "agents_per_min": 60.0 * len(runs) / makespan if makespan > 0 else 0.0,
        "completion_mean": statistics.fmean(seconds),
        "completion_p50": percentile(seconds, 50),
        "completion_p99": percentile(seconds, 99),
        "tokens_per_s": call_summary["completion_tokens"] / makespan if makespan > 0 else 0.0,
        **call_summary,
        "engine": engine,
        "agents": [{**asdict(r), "seconds": r.seconds} for r in runs],
    }


async def warm_up(mode: Mode, framework: Framework, task: Task, suite: Suite) -> None:
    """One short, unrecorded call per setup first: imports, connections and first-use costs hit neither round."""
    sampling = mode.sampling
    mode.sampling = dataclasses.replace(sampling, max_tokens=8)
    mode.begin()
    try:
        name = f"{framework.name.replace('-', '_')}_{mode.key}_warmup"
        with mode.agent(name):
            agent = await _create(framework, mode, name, suite.episode(task, mode.toolbox(name)).system)
            await _send(framework, agent, "Reply with OK.")
            await _close(framework, agent)
    finally:
        mode.end()
        await framework.end_round()
        mode.sampling = sampling
        mode.take_calls()


# --------------------------------------------------------------------------- the comparison


def make_backend(options: Options, log_dir: Path) -> Backend:
    if options.model == "local":
        return LocalBackend(
            n_ctx=options.n_ctx, n_threads=options.threads, max_batch=options.batch, seed=options.seed,
            model_path=options.model_path, log_dir=log_dir,
        )
    if options.model == "sim":
        return SimBackend(max_batch=options.batch, seed=options.seed)
    raise ValueError(f"--model must be 'local' or 'sim', not {options.model!r}")


def _approve(agent: str, action: str, detail: dict[str, Any]) -> bool:
    """The benchmark is the user who approves its agents' code execution (the python tool is irreversible)."""
    return True


def _kernel(backend: Backend, options: Options, data_dir: Path, recorder: KernelCallRecorder) -> Any:
    from aios_core.kernel import Kernel

    kernel = Kernel(
        cores=[backend.make_core()],
        scheduler=options.scheduler,
        data_dir=data_dir,
        entry_point_plugins=False,
        auto_register_agents=True,
        confirm=_approve,
    )
    kernel.plugins.register(recorder, name="bench-call-recorder")
    return kernel


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [
        "makespan", "agents_per_min", "completion_mean", "completion_p50", "completion_p99", "queue_wait_share",
        "tokens_per_s", "llm_calls", "completion_tokens", "mean_call_latency", "overhead_us_median", "overhead_share", "errors",
    ]
    out: dict[str, Any] = {}
    for setup in SETUPS:
        rows = [r for r in rounds if r["setup"] == setup]
        if not rows:
            continue
        s: dict[str, Any] = {"label": SETUP_LABELS[setup], "rounds": len(rows)}
        for k in keys:
            values = [r[k] for r in rows if r.get(k) is not None]
            s[k] = statistics.median(values) if values else None
        s["passed"] = sum(r["passed"] for r in rows)
        s["attempts"] = sum(r["tasks"] for r in rows)
        s["success_rate"] = s["passed"] / s["attempts"] if s["attempts"] else 0.0
        batches = [e["mean_batch"] for r in rows for e in r["engine"].values()]
        s["mean_batch"] = statistics.median(batches) if batches else None
        hits = [e["prefix_hit_rate"] for r in rows for e in r["engine"].values() if "prefix_hit_rate" in e]
        s["prefix_hit_rate"] = statistics.median(hits) if hits else None
        out[setup] = s
    return out


def _ratios(rounds: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """Per baseline (llama-server first): baseline / AIOS from the medians, and the makespan ratio of every round."""
    if "aios" not in summary:
        return {}
    ai = summary["aios"]
    out: dict[str, Any] = {}
    for baseline in BASELINES:
        if baseline not in summary:
            continue
        nat = summary[baseline]
        per_round = per_round_ratios(rounds, baseline)

        def ratio(key: str, nat: dict[str, Any] = nat) -> float | None:
            return nat[key] / ai[key] if nat.get(key) and ai.get(key) else None

        out[baseline] = {
            "makespan": ratio("makespan"),
            "makespan_per_round": per_round,
            "completion_mean": ratio("completion_mean"),
            "completion_p99": ratio("completion_p99"),
            "throughput_aios_over_baseline": (ai["agents_per_min"] / nat["agents_per_min"]) if nat["agents_per_min"] else None,
            "success_not_lower_with_aios": ai["success_rate"] >= nat["success_rate"],
        }
    return out


def _verdict_agreement(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Verdicts and reply texts compared across setups, within each round (greedy decoding: they should match).

    ``replies_identical_all``: the share of (round, task, reply index) whose text is
    the same in every setup; ``replies_identical_vs_aios``: the same per baseline
    against AIOS. A reply one setup never gave counts as different.
    """
    setups = [s for s in SETUPS if any(r["setup"] == s for r in rounds)]
    by_setup: dict[str, dict[str, list[bool]]] = {s: {} for s in setups}
    texts: dict[int, dict[str, dict[tuple[str, int], str]]] = {}
    for r in rounds:
        for a in r["agents"]:
            by_setup[r["setup"]].setdefault(a["task_id"], []).append(a["passed"])
            for k, text in enumerate(a.get("texts", [])):
                texts.setdefault(r["round"], {}).setdefault(r["setup"], {})[(a["task_id"], k)] = text
    differ = sorted({
        t for s in setups if s != "aios" and "aios" in by_setup for t in by_setup[s]
        if t in by_setup["aios"] and any(by_setup[s][t]) != any(by_setup["aios"][t])
    })
    same_all = total = 0
    pairs = {b: [0, 0] for b in setups if b != "aios"}
    for per_setup in texts.values():
        if len(per_setup) < len(setups):
            continue
        for key in set().union(*(set(t) for t in per_setup.values())):
            values = [per_setup[s].get(key) for s in setups]
            total += 1
            same_all += all(v is not None and v == values[0] for v in values)
            for b in pairs:
                pairs[b][1] += 1
                pairs[b][0] += per_setup[b].get(key) is not None and per_setup[b].get(key) == per_setup.get("aios", {}).get(key)
    return {
        "tasks_with_different_verdicts": differ,
        "replies_compared": total,
        "replies_identical_all": same_all / total if total else None,
        "replies_identical_vs_aios": {b: (s / n if n else None) for b, (s, n) in pairs.items()} if "aios" in setups else {},
    }


def _environment(options: Options, backend: Backend) -> dict[str, Any]:
    import os

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "backend": backend.describe(),
    }


async def compare(options: Options, *, console: Any = None) -> dict[str, Any]:
    """Run the comparison; returns the result document (also what is written as JSON)."""
    suite = get_suite(options.suite)
    taskset = suite.load(LoadOptions(full=options.full, limit=options.limit, path=options.data, subsets=options.subsets))
    framework = get_framework(options.framework)
    work = Path(tempfile.mkdtemp(prefix="aios-bench-"))
    backend = make_backend(options, work / "logs")
    sampling = Sampling(max_tokens=options.max_tokens, seed=options.seed)
    recorder = KernelCallRecorder()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=options.agents + 8, thread_name_prefix="bench-agent"))
    rounds: list[dict[str, Any]] = []
    kernel = None
    started = time.time()
    setups = tuple(s for s in SETUPS if s in options.setups)
    try:
        modes: dict[str, Mode] = {}
        tools = max(2, options.agents)
        endpoint = None
        if "native" in setups:
            endpoint = await asyncio.to_thread(backend.start_native)
            modes["native"] = NativeMode(framework, endpoint, sampling, tool_parallel=tools)
        if "llama_server" in setups:
            batched = await asyncio.to_thread(backend.start_batched, options.agents)
            modes["llama_server"] = NativeMode(framework, batched, sampling, tool_parallel=tools, key="llama_server", cold=backend.cold_batched)
            endpoint = endpoint or batched
        if "aios" in setups:
            kernel = _kernel(backend, options, work / "kernel", recorder)
            await asyncio.to_thread(kernel.start)
            recorder.wrap(kernel)
            # the endpoint the (patched) agents are configured with; with AIOS their calls never reach it
            modes["aios"] = AIOSMode(framework, endpoint or Endpoint(base_url="http://127.0.0.1:9/v1", model="unused"), sampling,
                                     kernel=kernel, recorder=recorder)
        progress = _progress(console) if options.progress else None
        with progress if progress is not None else _null():
            for key in setups:
                await warm_up(modes[key], framework, taskset.tasks[0], suite)
            for i in range(options.rounds):
                for key in round_order(setups, i):
                    rounds.append(await run_round(i, modes[key], suite, taskset, framework, options, progress))
                    if console is not None:
                        r = rounds[-1]
                        console.log(
                            f"round {i + 1} {SETUP_LABELS[key]}: makespan {r['makespan']:.1f} s, "
                            f"{r['passed']}/{r['tasks']} passed, {r['llm_calls']} LLM calls, {r['errors']} errors"
                        )
    finally:
        if kernel is not None:
            await asyncio.to_thread(kernel.stop)
        await asyncio.to_thread(backend.stop_native)
        await asyncio.to_thread(backend.stop_batched)
        shutil.rmtree(work, ignore_errors=True)
    summary = _summary(rounds)
    return {
        "kind": "aios-bench-comparison",
        "suite": options.suite,
        "task_set": taskset.describe(),
        "framework": framework.name,
        "adapter": framework.adapter,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "environment": _environment(options, backend),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "summary": summary,
        "ratios": _ratios(rounds, summary),
        "agreement": _verdict_agreement(rounds),
        "rounds": rounds,
    }


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(console: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser, *, default_max_tokens: int, default_limit: int) -> None:
    parser.add_argument("--framework", default="sdk", choices=sorted(FRAMEWORKS), help="whose agents run the tasks")
    parser.add_argument("--agents", type=int, default=8, help="agents running at once (both setups)")
    parser.add_argument("--model", default="local", choices=["local", "sim"], help="local: the embedded GGUF; sim: the sim core (fast)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; each runs both setups, order alternating")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="run the whole task set (when its data is present)")
    parser.add_argument("--limit", type=int, default=None, help=f"the first N tasks (default {default_limit})")
    parser.add_argument("--data", type=Path, default=None, help="the official data (file or directory) instead of the default")
    parser.add_argument("--max-tokens", type=int, default=default_max_tokens, help="output budget of every LLM call (both setups)")
    parser.add_argument("--n-ctx", type=int, default=16384, help="context of the model (server and core alike)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (server and core alike)")
    parser.add_argument("--max-batch", type=int, default=None, help="sequences the AIOS core decodes together (default: min(agents, 16))")
    parser.add_argument("--scheduler", default="plas", help="the kernel's scheduling policy (with AIOS)")
    parser.add_argument("--model-path", default=None, help="a GGUF instead of the default Gemma 3 270M")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where the JSON and PNG go")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--setups", default=",".join(SETUPS),
        help="comma list of native (serial llama-cpp-python server), llama_server (llama.cpp's batching server), aios",
    )
    parser.add_argument("--build", action="store_true", help="build llama-server first if it is missing (15-25 minutes)")


def options_from_args(suite: str, args: argparse.Namespace) -> Options:
    if args.agents < 1:
        raise SystemExit("--agents must be at least 1")
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    setups = tuple(s.strip() for s in args.setups.split(",") if s.strip())
    if not setups or set(setups) - set(SETUPS):
        raise SystemExit(f"--setups takes a comma list of {', '.join(SETUPS)}, not {args.setups!r}")
    return Options(
        suite=suite, framework=args.framework, agents=args.agents, model=args.model, rounds=args.rounds, seed=args.seed,
        max_tokens=args.max_tokens, n_ctx=args.n_ctx, threads=args.threads, max_batch=args.max_batch, scheduler=args.scheduler,
        full=args.full, limit=args.limit, data=args.data, subsets=tuple(s for s in (getattr(args, "subsets", "") or "").split(",") if s),
        out=args.out, plots=not args.no_plots, model_path=args.model_path, progress=not args.no_progress, setups=setups,
    )


def build_parser(suite: str, *, prog: str | None = None) -> argparse.ArgumentParser:
    """The suite's command line: the harness's options plus the suite's own, with its description and an example."""
    import inspect

    suite_obj = get_suite(suite)
    parser = argparse.ArgumentParser(
        prog=prog or f"aios bench {suite}",
        description=f"{suite_obj.description}.\n\n{inspect.cleandoc(suite_obj.details)}",
        epilog=f"example: aios bench {suite} --framework langchain --agents 8 --model local --limit 8 --rounds 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser, default_max_tokens=suite_obj.default_max_tokens, default_limit=suite_obj.default_limit)
    suite_obj.add_arguments(parser)
    return parser


def main(suite: str, argv: list[str] | None = None, *, prog: str | None = None) -> int:
    import shlex
    import sys

    from aios.bench.suites.agents.base import FrameworkUnavailable
    from aios.bench.suites.report import plot, print_report, write_json
    from aios.bench.suites.tasks.base import TaskSetError
    from rich.console import Console

    args = build_parser(suite, prog=prog).parse_args(argv)
    options = options_from_args(suite, args)
    if options.model == "local" and "llama_server" in options.setups:
        from aios.bench.suites.agents.llama_cpp_server import LlamaServerMissing, build, find_binary

        try:
            find_binary("llama-server")
        except LlamaServerMissing as exc:
            if not args.build:
                print(exc, file=sys.stderr)
                return 2
            build()
    console = Console(width=max(120, Console().width))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = asyncio.run(compare(options, console=console))
    except (TaskSetError, FrameworkUnavailable) as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    result["command"] = f"aios bench {suite} " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    print_report(result, console)
    json_path = write_json(result, options.out)
    png = plot(result, json_path.with_suffix(".png")) if options.plots else None
    console.print(f"results: {json_path}" + (f", plot: {png}" if png else ""))
    return 0


def humaneval(argv: list[str] | None = None) -> int:
    """HumanEval with and without AIOS: code generation from signature + docstring, pass@1."""
    return main("humaneval", argv)


def mint(argv: list[str] | None = None) -> int:
    """MINT with and without AIOS: multi-turn problem solving with Python tool use."""
    return main("mint", argv)


def gaia(argv: list[str] | None = None) -> int:
    """GAIA with and without AIOS: tool-using question answering (offline stand-in unless --data)."""
    return main("gaia", argv)


def swebench(argv: list[str] | None = None) -> int:
    """SWE-Bench-Lite with and without AIOS: repository patching (offline stand-in unless --data)."""
    return main("swebench", argv)
