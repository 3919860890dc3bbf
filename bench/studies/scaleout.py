"""Scale-out on real engines: AIOS over two engines against LiteLLM's Router over the same two.

    aios bench scaleout --agents 16 --apps 4 --rounds 2 [--kill-after 20] [--model local|sim]

Two engines (``llama-server`` processes with ``--slots`` each; ``--model sim``:
two batching sim servers) serve one model. Two setups drive the same agents to
them, alternating order per round:

* ``aios``: ``aios serve`` with the two engines as two ``openai`` cores of one
  kernel (routing: the engine where a call costs least in measured seconds,
  its conversation's cache hit against the engine's load; PLAS over all agents,
  without preempting remote generations; a finished call's slot held for its
  agent's next turn, ``--keep-slots``; a generation whose engine failed
  moves to the other one, continuing from the text already streamed);
* ``litellm``: LiteLLM's ``Router`` over the same two endpoints, in the client
  process, what users put in front of several endpoints (``simple-shuffle``,
  ``num_retries`` 2, a failed deployment cooled down);
* ``aios-by-speed`` (with ``--ablate-batch-by-speed``): the kernel of ``aios`` in
  a second ``aios serve`` whose cores keep each engine at the batch size it
  measured fastest for the calls waiting (``batch_by_speed = true``) rather than
  fill every slot: that rule measured against the default, in the same run.
* ``aios-new-agents`` (with ``--ablate-new-agents``): the kernel of ``aios`` in a
  second ``aios serve`` whose agents have new names every round (the same prompts
  and lengths), so what the kernel learns of returning agents is measured in the
  same run.

The workload: ``--apps`` applications, each with its own long system prompt
shared by its agents (``--agents`` in all), multi-turn with tool delays and
heavy-tailed output lengths (the :mod:`agents study's <aios.bench.studies.agents>`
generator). With ``--kill-after S`` a second variant kills one engine (engine 1, or
``--kill-engine``) S seconds into every run: the table counts calls lost (failed to the agent) and where
the rest went. Both engines are restarted (cold caches) before every run.
Each variant's ``aios serve`` serves all its rounds, so from round 2 on it knows
the agents (their answer lengths and pauses, by name); ``--new-agents-each-round``
gives them new names every round, so every round measures a first meeting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from aios.bench.metrics import counter_changes, percentile
from aios.bench.result_stamps import claim_stamp
from aios.bench.studies.agents import AgentPlan, WorkloadSpec, kernel_counters, make_workload, run_agent
from aios.bench.suites.modes import round_order

from aios_core.errors import ConfigError

log = logging.getLogger(__name__)

SETUPS = ("aios", "litellm")
#: the ablation's setup (``--ablate-batch-by-speed``)
BY_SPEED = "aios-by-speed"
#: the ablation's setup (``--ablate-new-agents``)
NEW_AGENTS = "aios-new-agents"
LABELS = {"aios": "AIOS (2 openai cores)", "litellm": "LiteLLM Router", BY_SPEED: "AIOS at each engine's fastest batch",
          NEW_AGENTS: "AIOS meeting new agents"}


def multi_app_workload(agents: int, apps: int, *, turns: int, seed: int, system_words: int, mean_tokens: int, max_tokens: int,
                       tool_delay: float, tag: str) -> list[AgentPlan]:
    """``apps`` applications with their own shared system prompt; agents dealt round-robin to them."""
    if apps < 1 or agents < apps:
        raise ValueError(f"need at least one agent per application, got {agents} agents for {apps} applications")
    plans: list[AgentPlan] = []
    for app in range(apps):
        n = agents // apps + (1 if app < agents % apps else 0)
        spec = WorkloadSpec(agents=n, turns=turns, shared=True, system_words=system_words, mean_tokens=mean_tokens,
                            max_tokens=max_tokens, tool_delay=tool_delay, seed=seed * 1000 + app)
        for p in make_workload(spec, tag=f"{tag} app {app}"):
            plans.append(AgentPlan(name=f"app{app}-{p.name}", system=p.system, turns=p.turns))
    return plans


# --------------------------------------------------------------------------- the two engines


class Engines:
    """Two engines on fixed ports, restarted (cold) before every run; one can be killed mid-run."""

    def __init__(self, model: str, *, slots: int, n_ctx: int, threads: int, seed: int, work: Path, sim_costs: dict[str, float] | None = None) -> None:
        from aios.bench.suites.agents.llama_cpp_server import free_port

        self.model, self.slots, self.n_ctx, self.threads, self.seed, self.work = model, slots, n_ctx, threads, seed, work
        self.sim_costs = sim_costs
        self.ports = [free_port(), free_port()]
        self._servers: list[Any] = [None, None]

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}/v1" for p in self.ports]

    @property
    def model_name(self) -> str:
        return "sim" if self.model == "sim" else "gemma-3-270m"

    def _start_one(self, i: int) -> None:
        if self.model == "sim":
            from aios.bench.suites.agents.backends import SIM_REALTIME_COSTS
            from aios.bench.suites.agents.sim_server import SimServer

            from aios_core.cores.sim import SimCore

            core = SimCore(max_batch=self.slots, seed=self.seed, prefix_cache=self.slots, default_tokens=(1_000_000, 1_000_000),
                           **(self.sim_costs or SIM_REALTIME_COSTS))
            server = SimServer(core, model="sim", serial=False)
            server.port, server.base_url = self.ports[i], self.urls[i]
            server.start()
        else:
            from aios.bench.suites.agents.llama_cpp_server import LlamaServer, ServerConfig

            from aios_core.cores.model_files import default_model_path

            config = ServerConfig(model_path=default_model_path(), slots=self.slots, n_ctx=self.n_ctx, threads=self.threads, seed=self.seed)
            server = LlamaServer(config, log_dir=self.work / "engines", port=self.ports[i])
            server.start()
        self._servers[i] = server

    def restart(self) -> None:
        self.stop()
        for i in range(2):
            self._start_one(i)

    def kill(self, i: int) -> None:
        server = self._servers[i]
        if server is None:
            return
        if self.model == "sim":
            server.stop()
        else:
            server.kill()
        self._servers[i] = None

    def stop(self) -> None:
        for i, server in enumerate(self._servers):
            if server is not None:
                server.stop()
                self._servers[i] = None

    def describe(self) -> dict[str, Any]:
        described = {"model": self.model, "slots_each": self.slots, "n_ctx_each": self.n_ctx, "threads_each": self.threads,
                     "urls": self.urls}
        if self.model != "sim":
            from aios.bench.suites.agents.llama_cpp_server import build_record

            described["llama_server_build"] = build_record()
        return described


# --------------------------------------------------------------------------- the two setups


def aios_config(engines: Engines, work: Path, scheduler: str, keep_slots: float = 0.0, batch_by_speed: bool = False) -> dict[str, Any]:
    # holding a slot's room across a tool call pays only where the engine ties conversations to slots (llama-server);
    # the sim server's cache does not, so there it would only idle slots
    keep = {"keep_slots": keep_slots if engines.model != "sim" else 0.0}  # explicit: the cores' default is "auto"
    cores = [
        {"kind": "openai", "name": f"engine-{i}", "model": engines.model_name, "base_url": url, "max_batch": engines.slots,
         "context_length": engines.n_ctx, "timeout": 600.0, "max_retries": 2, "batch_by_speed": batch_by_speed, **keep}
        for i, url in enumerate(engines.urls)
    ]
    return {"scheduler": scheduler, "data_dir": str(work / "kernel"), "entry_point_plugins": False, "max_retries": 2, "cores": cores}


def litellm_router(engines: Engines) -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the price list at import
    from litellm import Router

    model_list = [
        {"model_name": "agents", "litellm_params": {"model": f"openai/{engines.model_name}", "api_base": url, "api_key": "sk-no-key"}}
        for url in engines.urls
    ]
    # what a user configures for two equal endpoints: spread the load, retry elsewhere, cool a failing one down
    return Router(model_list=model_list, routing_strategy="simple-shuffle", num_retries=2, retry_after=0, allowed_fails=1,
                  cooldown_time=3600, timeout=3600)


def litellm_sender(router: Any) -> Any:
    async def send(body: dict[str, Any]) -> dict[str, Any]:
        response = await router.acompletion(model="agents", **body)
        data = response.model_dump()
        data["api_base"] = (getattr(response, "_hidden_params", None) or {}).get("api_base")
        return data  # type: ignore[no-any-return]

    return send


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class ScaleoutOptions:
    agents: int = 16
    apps: int = 4
    turns: int = 4
    rounds: int = 2
    seed: int = 0
    model: str = "local"
    threads: int = 1
    n_ctx: int = 16384
    system_words: int = 300
    mean_tokens: int = 64
    max_tokens: int = 256
    tool_delay: float = 0.5
    kill_after: float | None = None
    #: which engine the killed variant kills (0 or 1). The kernel places a new agent's first turn by cache and
    #: load alone, the same way every run, so which engine dies decides which agents lose their conversations;
    #: LiteLLM's Router spreads every call at random
    kill_engine: int = 1
    scheduler: str = "plas"
    #: the openai cores' keep_slots (seconds a finished call's llama-server slot is held for its agent; 0: off)
    keep_slots: float = 5.0
    #: whether each AIOS agent ends itself after its last turn (an SDK agent's scope on exit). Off by default, as
    #: the study always ran: LiteLLM's clients cannot end anything, and with ended agents (which teach PLAS program
    #: sizes, its Gittins rank from the second round on) the killed variant measured no better (docs/benchmarks.md)
    end_agents: bool = False
    #: a third setup in every round: the same kernel with ``batch_by_speed`` on
    ablate_batch_by_speed: bool = False
    #: new agent names every round (the same prompts and answer lengths): the kernel of a variant serves all its
    #: rounds and learns each agent's answer length and pauses by name, so with the same names rounds 2 and later
    #: measure a kernel that knows the agents; with new ones every round is its first meeting with them
    new_agents_each_round: bool = False
    #: a setup in every round: the kernel of ``aios`` in a second ``aios serve`` whose agents have new names every
    #: round, so what the kernel learns of returning agents is measured in the same run
    ablate_new_agents: bool = False

    def __post_init__(self) -> None:
        if self.kill_engine not in (0, 1):
            raise ConfigError(f"kill_engine must be 0 or 1 (one of the two engines), not {self.kill_engine!r}")
        if self.ablate_new_agents and self.new_agents_each_round:
            raise ConfigError("ablate_new_agents compares returning agents with new ones: it needs the agents of the other "
                              "setups to return (drop new_agents_each_round)")

    @property
    def setups(self) -> tuple[str, ...]:
        return SETUPS + ((BY_SPEED,) if self.ablate_batch_by_speed else ()) + ((NEW_AGENTS,) if self.ablate_new_agents else ())

    @property
    def slots(self) -> int:
        return max(1, -(-self.agents // 2))


def round_plans(options: ScaleoutOptions, round_index: int, *, tag: str) -> list[AgentPlan]:
    """The agents of one round: the same seeded workload every round, under new names when the options ask."""
    plans = multi_app_workload(options.agents, options.apps, turns=options.turns, seed=options.seed, system_words=options.system_words,
                               mean_tokens=options.mean_tokens, max_tokens=options.max_tokens, tool_delay=options.tool_delay, tag=tag)
    return renamed(plans, round_index) if options.new_agents_each_round else plans


def renamed(plans: list[AgentPlan], round_index: int) -> list[AgentPlan]:
    """``plans`` under names no other round uses (the same prompts, turns and lengths)."""
    return [AgentPlan(name=f"{p.name}-r{round_index + 1}", system=p.system, turns=p.turns) for p in plans]


async def run_once(setup: str, plans: list[AgentPlan], *, engines: Engines, serve: Any, kill_after: float | None,
                   seed: int, round_index: int, end_agents: bool = False, kill_engine: int = 1) -> dict[str, Any]:
    await asyncio.to_thread(engines.restart)
    limits = httpx.Limits(max_connections=len(plans) + 4, max_keepalive_connections=len(plans) + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(3600.0, connect=30.0), limits=limits) as client:
        before: dict[str, float] = {}
        if serve is not None:
            keys = await serve.register(client, [p.name for p in plans])
            before = await asyncio.to_thread(kernel_counters, serve)
        else:
            # a Router per run, like the engines (restarted cold): one built before would still hold last run's
            # killed endpoint in its cooldown and send everything to the other from the start
            send = litellm_sender(await asyncio.to_thread(litellm_router, engines))
        t0 = time.perf_counter()
        killer = None
        if kill_after is not None:
            async def kill() -> None:
                await asyncio.sleep(kill_after)
                await asyncio.to_thread(engines.kill, kill_engine)
            killer = asyncio.create_task(kill())
        if serve is not None:
            async def agent(plan: AgentPlan) -> Any:
                result = await run_agent(client, serve.base_url, engines.model_name, keys[plan.name], plan, t0, seed)
                # the agent ended, as an SDK agent's scope does on exit (after its end was timed, as in the agents
                # study): the room held for its next turn goes at once, and PLAS learns its size
                if end_agents:
                    await serve.end(client, [plan.name])
                return result

            results = await asyncio.gather(*(agent(p) for p in plans))
        else:
            results = await asyncio.gather(*(run_agent(None, "", "", "", p, t0, seed, send=send) for p in plans))
        if killer is not None:
            killer.cancel()
    # what the kernel's cores did in this run (cached prompt tokens, slots held for agents...; {} for LiteLLM)
    engine: dict[str, float] = {}
    registered: list[str] = []
    curves: dict[str, Any] = {}
    if serve is not None:
        stats = await asyncio.to_thread(serve.stats)
        engine = counter_changes(before, kernel_counters(serve, stats))
        # each engine's median decode step by batch size as the kernel measured it so far (what batch_by_speed weighs)
        curves = {c.get("name", ""): c.get("step_ms_by_batch", {})
                  for pool in stats.get("pools", {}).values() for c in pool.get("cores", [])}
        names = {p.name for p in plans}
        registered = sorted(a["name"] for a in stats.get("agents", []) if a.get("name") in names)
    seconds = [a.seconds for a in results]
    calls = [c for a in results for c in a.calls]
    planned = sum(len(p.turns) for p in plans)
    done = [c for c in calls if c.error is None]
    return {
        "round": round_index + 1,
        "setup": setup,
        "makespan": max(a.end for a in results) - min(a.start for a in results),
        "completion_mean": statistics.fmean(seconds),
        "completion_p99": percentile(seconds, 99),
        "planned_calls": planned,
        "completed_calls": len(done),
        "lost_calls": planned - len(done),
        "agents_failed": sum(1 for a in results if a.error),
        "completion_tokens": sum(c.completion_tokens for c in done),
        "engine": engine,
        "step_ms_by_batch": curves,
        # the run's agents the kernel still knows after the run (each ended itself: none)
        "agents_registered_after": registered,
        "agents": [{**asdict(a), "seconds": a.seconds} for a in results],
    }


async def run_variant(options: ScaleoutOptions, kill_after: float | None, work: Path, console: Any = None) -> dict[str, Any]:
    from aios.bench.suites.agents.backends import AIOSServe

    engines = Engines(options.model, slots=options.slots, n_ctx=options.n_ctx, threads=options.threads, seed=options.seed, work=work)
    serves = {"aios": AIOSServe(aios_config(engines, work, options.scheduler, options.keep_slots), work_dir=work / "aios")}
    if options.ablate_batch_by_speed:
        serves[BY_SPEED] = AIOSServe(aios_config(engines, work / BY_SPEED, options.scheduler, options.keep_slots, batch_by_speed=True),
                                     work_dir=work / BY_SPEED)
    if options.ablate_new_agents:
        serves[NEW_AGENTS] = AIOSServe(aios_config(engines, work / NEW_AGENTS, options.scheduler, options.keep_slots), work_dir=work / NEW_AGENTS)
    await asyncio.to_thread(serves["aios"].check)  # a --scheduler the kernel refuses, named before any engine starts
    await asyncio.to_thread(engines.restart)  # the kernel's cores look at their engines when it starts
    rounds: list[dict[str, Any]] = []
    try:
        for serve in serves.values():
            await asyncio.to_thread(serve.start)
        for i in range(options.rounds):
            plans = round_plans(options, i, tag=f"round {i + 1} {os.urandom(3).hex()}")
            for setup in round_order(options.setups, i):
                # the new-agents ablation meets this round's agents under names no other round uses
                setup_plans = renamed(plans, i) if setup == NEW_AGENTS else plans
                r = await run_once(setup, setup_plans, engines=engines, serve=serves.get(setup), kill_after=kill_after,
                                   seed=options.seed, round_index=i, end_agents=options.end_agents, kill_engine=options.kill_engine)
                rounds.append(r)
                if console is not None:
                    console.log(f"{'kill' if kill_after is not None else 'healthy'} round {i + 1} {LABELS[setup]}: makespan "
                                f"{r['makespan']:.1f} s, mean {r['completion_mean']:.1f} s, lost calls {r['lost_calls']}/{r['planned_calls']}")
    finally:
        for serve in serves.values():
            await asyncio.to_thread(serve.stop)
        await asyncio.to_thread(engines.stop)
    summary: dict[str, Any] = {}
    for s in options.setups:
        rows = [r for r in rounds if r["setup"] == s]
        summary[s] = {k: statistics.median(r[k] for r in rows) for k in ("makespan", "completion_mean", "completion_p99", "completion_tokens")}
        summary[s]["lost_calls"] = sum(r["lost_calls"] for r in rows)
        summary[s]["planned_calls"] = sum(r["planned_calls"] for r in rows)
    a, b = summary["aios"], summary["litellm"]
    out = {
        "variant": "one engine killed" if kill_after is not None else "healthy",
        "kill_after": kill_after,
        "kill_engine": options.kill_engine if kill_after is not None else None,
        "engines": engines.describe(),
        "summary": summary,
        "ratios": ratios(b, a),
        "rounds": rounds,
    }
    if BY_SPEED in summary:
        # the ablation: the default kernel's times over those of the same kernel with batch_by_speed (above 1: it helped)
        out["ratios_aios_over_by_speed"] = ratios(a, summary[BY_SPEED])
    if NEW_AGENTS in summary:
        # the same kernel meeting new agents every round over it with agents that return (above 1: knowing them helped)
        out["ratios_new_agents_over_aios"] = ratios(summary[NEW_AGENTS], a)
    return out


def ratios(baseline: dict[str, Any], aios: dict[str, Any]) -> dict[str, float | None]:
    """``baseline`` over ``aios`` for each timing (above 1: AIOS finished sooner)."""
    return {k: (baseline[k] / aios[k] if aios[k] and baseline[k] else None) for k in ("makespan", "completion_mean", "completion_p99")}


async def run_study(options: ScaleoutOptions, console: Any = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="aios-scaleout-"))
    started = time.time()
    load = os.getloadavg()  # before the run: afterwards it is the run's own load
    try:
        variants = [await run_variant(options, None, work, console)]
        if options.kill_after is not None:
            variants.append(await run_variant(options, options.kill_after, work, console))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "kind": "aios-bench-scaleout",
        "options": asdict(options),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "load_average_at_start": [round(x, 2) for x in load],
        "variants": variants,
    }


def markdown(result: dict[str, Any]) -> str:
    head = ["variant", "AIOS makespan s", "LiteLLM makespan s", "LiteLLM / AIOS makespan", "LiteLLM / AIOS mean", "LiteLLM / AIOS p99",
            "calls lost AIOS", "calls lost LiteLLM"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for v in result["variants"]:
        a, b, r = v["summary"]["aios"], v["summary"]["litellm"], v["ratios"]

        def f(x: Any) -> str:
            return "-" if x is None else f"{x:.2f}"

        lines.append(
            f"| {v['variant']} | {a['makespan']:.1f} | {b['makespan']:.1f} | **{f(r['makespan'])}x** | {f(r['completion_mean'])}x | "
            f"{f(r['completion_p99'])}x | {a['lost_calls']}/{a['planned_calls']} | {b['lost_calls']}/{b['planned_calls']} |"
        )
    # each ablation's setup against the default kernel: (setup, its ratio key, how the ratio reads)
    for setup, key, ratio in ((BY_SPEED, "ratios_aios_over_by_speed", "AIOS / it"), (NEW_AGENTS, "ratios_new_agents_over_aios", "it / AIOS")):
        ablated = [v for v in result["variants"] if key in v]
        if not ablated:
            continue
        lines += ["", f"| variant | {LABELS[setup]}: makespan s | {ratio}, makespan | {ratio}, mean | calls lost |", "|---|---:|---:|---:|---:|"]
        for v in ablated:
            other, r = v["summary"][setup], v[key]
            lines.append(f"| {v['variant']} | {other['makespan']:.1f} | {f(r['makespan'])}x | {f(r['completion_mean'])}x | "
                         f"{other['lost_calls']}/{other['planned_calls']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Scale-out: AIOS over two llama-server engines vs LiteLLM's Router over the same two (one engine killed mid-run)."""
    import shlex
    import sys

    from rich.console import Console

    parser = argparse.ArgumentParser(prog="aios bench scaleout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--apps", type=int, default=4, help="applications, each with its own shared system prompt")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=["local", "sim"], default="local")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads of each engine")
    parser.add_argument("--n-ctx", type=int, default=16384, help="KV cells of each engine")
    parser.add_argument("--system-words", type=int, default=300)
    parser.add_argument("--mean-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--tool-delay", type=float, default=0.5)
    parser.add_argument("--kill-after", type=float, default=None, help="also run a variant killing one engine this many seconds in")
    parser.add_argument("--kill-engine", type=int, choices=[0, 1], default=1, help="the engine the killed variant kills")
    parser.add_argument("--scheduler", default="plas")
    parser.add_argument("--keep-slots", type=float, default=5.0,
                        help="seconds at most AIOS holds a llama-server slot for an agent's next turn (0: off; local model only)")
    parser.add_argument("--end-agents", action="store_true",
                        help="each AIOS agent ends after its last turn, as an SDK agent's scope does (default: they stay "
                             "registered, as OpenAI clients' agents do, and their held slots run out)")
    parser.add_argument("--new-agents-each-round", action="store_true",
                        help="new agent names every round (same prompts and lengths), so the kernel never knows an agent from an earlier round")
    parser.add_argument("--ablate-new-agents", action="store_true",
                        help="a setup each round: the same kernel in a second aios serve whose agents have new names every "
                             "round, so what it learns of returning agents is measured in the same run")
    parser.add_argument("--ablate-batch-by-speed", action="store_true",
                        help="a third setup each round: the same kernel with its cores keeping each engine at the batch "
                             "size it measured fastest rather than filling every slot (batch_by_speed = true)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if not 0 <= args.keep_slots < float("inf"):
        parser.error(f"--keep-slots must be 0 (off) or a number of seconds, not {args.keep_slots}")
    if args.model == "local":
        from aios.bench.suites.agents.llama_cpp_server import LlamaServerMissing, find_binary

        try:
            find_binary("llama-server")
        except LlamaServerMissing as exc:
            print(exc, file=sys.stderr)
            return 2
    options = ScaleoutOptions(
        agents=args.agents, apps=args.apps, turns=args.turns, rounds=args.rounds, seed=args.seed, model=args.model, threads=args.threads,
        n_ctx=args.n_ctx, system_words=args.system_words, mean_tokens=args.mean_tokens, max_tokens=args.max_tokens,
        tool_delay=args.tool_delay, kill_after=args.kill_after, scheduler=args.scheduler, keep_slots=args.keep_slots,
        end_agents=args.end_agents, ablate_batch_by_speed=args.ablate_batch_by_speed, new_agents_each_round=args.new_agents_each_round,
        kill_engine=args.kill_engine, ablate_new_agents=args.ablate_new_agents,
    )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = asyncio.run(run_study(options, Console(stderr=True)))
    except ConfigError as exc:
        parser.error(exc.message)
    result["command"] = "aios bench scaleout " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    print(markdown(result))
    stamp, claim = claim_stamp(args.out, "scaleout")
    with claim:
        path = args.out / f"scaleout-{args.model}-{stamp}.json"
        path.write_text(json.dumps(result, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
