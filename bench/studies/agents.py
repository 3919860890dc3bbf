"""Multi-turn agents against llama-server and AIOS: what an agent OS adds over the engine an expert runs.

    aios bench agents --agents 1 4 8 16 32 --shared both --turns 4 --rounds 2 [--max-slots 16] [--model local|sim]

N agents each hold a conversation of ``--turns`` turns: send the conversation,
read the reply, wait for a "tool" (a sleep of a length fixed per agent and turn),
send the next turn. With ``--shared yes`` every agent's conversation opens with
one long system prompt (an application's instructions, shared by its agents);
with ``no`` each agent's system prompt is its own (same length, different from
the first token). Output lengths are heavy-tailed (Pareto, per agent and turn,
fixed by the seed) and forced through ``max_tokens`` with ``ignore_eos`` (the
end-of-generation tokens are never sampled, by llama-server and by the kernel's
core alike), so every setup generates the same number of tokens (reported; a
difference is flagged).

The same async OpenAI-style client (httpx, one request per turn, greedy,
``temperature`` 0, same ``seed``) talks to every setup, each in its own process:

* ``llama_server``: llama.cpp's ``llama-server`` with ``-np`` = min(agents,
  ``--max-slots``) slots, ``--kv-unified``, its prompt caches as shipped; the
  baseline that counts;
* ``aios``: ``aios serve`` with the llamacpp core (``max_batch`` = the same slots,
  PLAS, prefix sharing), agents registered with their own tokens;
* ``native`` (optional, ``--setups``): llama-cpp-python's serial server, context;
* ``aios_ablated`` (with ``--ablate-core-option``): a second ``aios serve``, the
  same kernel with those core options changed, so that a feature of the core
  is measured against the same kernel without it in one run (ratios
  ablated / AIOS: above 1, the feature made AIOS faster).

Setups rotate their order every round (:func:`~aios.bench.suites.modes.round_order`);
every round's system prompts start with a round tag, so no setup reuses KV of
an earlier round. Reported per (agents, shared): makespan, mean / p50 / p99
agent completion, ratios baseline / AIOS (above 1: AIOS is faster), generated
tokens per setup, and agreement: the share of calls whose output text is the
same in every setup (greedy decoding; the correctness check). JSON with every
call of every round, and a PNG.

``--model sim`` runs the same harness on the sim core (a batching stand-in for
llama-server, ``aios serve`` with the sim core): seconds, for CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from aios.bench.metrics import counter_changes, per_round_ratios, percentile
from aios.bench.result_stamps import claim_stamp
from aios.bench.studies.cli_options import key_value_options
from aios.bench.suites.agents import llama_cpp_server
from aios.bench.suites.modes import ENGINE_GAUGES, SETUP_LABELS, round_order

from aios_core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SETUPS = ("llama_server", "aios")
BASELINES = ("llama_server", "native")
#: the setup of ``--ablate-core-option``, compared with AIOS like a baseline (ablated / AIOS)
ABLATED = "aios_ablated"
#: every setup a level's ratios put against AIOS
COMPARED = (*BASELINES, ABLATED)


def setups_run(setups: Sequence[str], ablate_core_options: Sequence[Any]) -> tuple[str, ...]:
    """The setups that run: those asked for, and the ablated kernel when core options are ablated."""
    return (*setups, *((ABLATED,) if ablate_core_options else ()))

_TOPICS = (
    "You are a careful assistant in a data pipeline. Read the tool results you are given, keep the numbering of every "
    "list consistent, never skip an item, and continue sequences exactly as they were started. Answer in plain text, "
    "without markdown, one item after another, separated by commas. When a tool returns a list of numbers, continue it "
    "from where it stopped, counting upwards by one, until you are told to stop. Do not explain what you do. Do not "
    "repeat the instructions. Do not greet the user. Keep going until the output budget ends."
).split()


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True)
class Turn:
    user: str
    max_tokens: int
    #: seconds the agent's "tool" takes after this turn's reply (none after the last turn)
    tool_delay: float


@dataclass(frozen=True)
class AgentPlan:
    name: str
    system: str
    turns: tuple[Turn, ...]

    @property
    def output_tokens(self) -> int:
        return sum(t.max_tokens for t in self.turns)


@dataclass(frozen=True)
class WorkloadSpec:
    agents: int
    turns: int = 4
    shared: bool = True
    #: words of the system prompt (about 1.3 tokens each)
    system_words: int = 300
    mean_tokens: int = 64
    min_tokens: int = 8
    max_tokens: int = 256
    #: Pareto shape of an agent's length factor (smaller: heavier tail; 1.5 has a finite mean, infinite variance)
    alpha: float = 1.5
    tool_delay: float = 0.5
    seed: int = 0


def system_prompt(words: int, owner: str, tag: str) -> str:
    """A long instruction text; ``owner`` opens it (so unshared prompts differ from the first token), ``tag`` names the round."""
    body = " ".join(_TOPICS[i % len(_TOPICS)] for i in range(words))
    return f"[{tag}] {owner}. {body}"


def make_workload(spec: WorkloadSpec, *, tag: str = "r1") -> list[AgentPlan]:
    """Deterministic per seed: the same agents, turns, lengths and delays for every setup of a round.

    An agent's output lengths are ``mean_tokens`` times its Pareto length factor
    (mean 1) times a per-turn jitter, clipped to ``[min_tokens, max_tokens]``:
    most agents are short, a few are long (heavy-tailed program lengths).
    """
    if spec.agents < 1 or spec.turns < 1:
        raise ValueError("a workload needs at least one agent and one turn")
    if not 1 <= spec.min_tokens <= spec.max_tokens:
        raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {spec.min_tokens} and {spec.max_tokens}")
    if spec.alpha <= 1.0:
        raise ValueError(f"the Pareto shape must be above 1 (finite mean), got {spec.alpha}")
    rng = random.Random(spec.seed)
    x_m = (spec.alpha - 1.0) / spec.alpha  # scale for mean 1
    shared = system_prompt(spec.system_words, "Application: number lists", tag)
    plans = []
    for a in range(spec.agents):
        factor = x_m * rng.paretovariate(spec.alpha)
        system = shared if spec.shared else system_prompt(spec.system_words, f"Agent {a} of application {a}", tag)
        turns = []
        start = 100 + 1000 * a
        for k in range(spec.turns):
            n = round(spec.mean_tokens * factor * rng.uniform(0.75, 1.25))
            n = max(spec.min_tokens, min(spec.max_tokens, n))
            numbers = ", ".join(str(start + 40 * k + j) for j in range(6))
            user = f"Tool result {k + 1}: {numbers}, Continue the list:"
            delay = round(rng.expovariate(1.0 / spec.tool_delay), 3) if spec.tool_delay > 0 and k < spec.turns - 1 else 0.0
            turns.append(Turn(user=user, max_tokens=n, tool_delay=delay))
        plans.append(AgentPlan(name=f"agent{a:03d}", system=system, turns=tuple(turns)))
    return plans


# --------------------------------------------------------------------------- one setup, one round


@dataclass
class Call:
    agent: str
    turn: int
    start: float
    end: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    #: which engine answered, where the setup says so (the kernel's core, or the endpoint LiteLLM picked)
    served_by: str | None = None


@dataclass
class AgentResult:
    agent: str
    start: float
    end: float = 0.0
    calls: list[Call] = field(default_factory=list)
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Server(Protocol):
    """A setup's server: started before the rounds, stopped after; it hands out each agent's API key."""

    key: str

    def check(self) -> None:
        """Refuse a configuration before any round runs (:class:`ConfigError`); a server with no options of its own returns."""
        ...
    def start(self) -> str: ...
    def stop(self) -> None: ...
    async def api_keys(self, client: httpx.AsyncClient, names: list[str]) -> dict[str, str]: ...
    def describe(self) -> dict[str, Any]: ...
    def counters(self) -> dict[str, float]:
        """Cumulative engine counters (steps, tokens, snapshots, decode time...); {} when the server reports none."""
        ...
    async def end_agents(self, client: httpx.AsyncClient, names: list[str]) -> None:
        """The round's agents are done (a kernel forgets their programs; the next round's agents start afresh)."""
        ...


#: sends one chat completion body (without "model") and returns the OpenAI response as a dict
Sender = Any


def http_sender(client: httpx.AsyncClient, base_url: str, model: str, api_key: str) -> Sender:
    """The OpenAI wire format over HTTP: what every setup's clients speak."""
    headers = {"Authorization": f"Bearer {api_key}"}

    async def send(body: dict[str, Any]) -> dict[str, Any]:
        try:
            r = await client.post(f"{base_url}/chat/completions", json={"model": model, **body}, headers=headers)
            r.raise_for_status()
            return r.json()  # type: ignore[no-any-return]
        except httpx.HTTPStatusError as exc:
            raise RuntimeError(f"HTTP {exc.response.status_code}: {exc.response.text[:300]}") from exc

    return send


async def run_agent(
    client: httpx.AsyncClient | None, base_url: str, model: str, api_key: str, plan: AgentPlan, t0: float, seed: int,
    *, send: Sender | None = None,
) -> AgentResult:
    """One agent's conversation, as an OpenAI-client loop: the reply joins the history, then the tool's delay."""
    if send is None:
        assert client is not None
        send = http_sender(client, base_url, model, api_key)
    result = AgentResult(agent=plan.name, start=time.perf_counter() - t0)
    messages: list[dict[str, str]] = [{"role": "system", "content": plan.system}]
    for k, turn in enumerate(plan.turns):
        messages.append({"role": "user", "content": turn.user})
        # ignore_eos (llama-server's option, honoured by the kernel's llama.cpp core too): every setup makes max_tokens
        body = {"messages": list(messages), "max_tokens": turn.max_tokens, "temperature": 0.0, "seed": seed, "ignore_eos": True}
        call = Call(agent=plan.name, turn=k, start=time.perf_counter() - t0)
        try:
            data = await send(body)
        except Exception as exc:  # noqa: BLE001 - the call failed; the agent stops and the failure is counted
            call.end = time.perf_counter() - t0
            call.error = f"{type(exc).__name__}: {str(exc)[:300]}"
            result.calls.append(call)
            result.error = call.error
            break
        call.end = time.perf_counter() - t0
        choice = data["choices"][0]
        call.text = choice["message"].get("content") or ""
        call.finish_reason = choice.get("finish_reason")
        usage = data.get("usage") or {}
        call.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        call.completion_tokens = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        if details.get("cached_tokens") is not None:
            call.cached_tokens = int(details["cached_tokens"])
        elif data.get("timings", {}).get("cache_n") is not None:  # llama-server reports its prompt cache here
            call.cached_tokens = int(data["timings"]["cache_n"])
        call.served_by = data.get("api_base") or (data.get("system_fingerprint") if str(data.get("system_fingerprint")).startswith("aios-") else None)
        result.calls.append(call)
        messages.append({"role": "assistant", "content": call.text})
        if turn.tool_delay > 0:
            await asyncio.sleep(turn.tool_delay)
    result.end = time.perf_counter() - t0
    return result


async def run_round(server: Server, base_url: str, model: str, plans: list[AgentPlan], *, round_index: int, seed: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=len(plans) + 4, max_keepalive_connections=len(plans) + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(3600.0, connect=30.0), limits=limits) as client:
        keys = await server.api_keys(client, [p.name for p in plans])  # outside the timed part
        before = await asyncio.to_thread(server.counters)
        t0 = time.perf_counter()

        async def agent(plan: AgentPlan) -> AgentResult:
            result = await run_agent(client, base_url, model, keys[plan.name], plan, t0, seed)
            # the agent ended, as an SDK agent's scope does on exit (after its end was timed): PLAS learns its size
            # while the others still run, and the same name next round starts a new program
            await server.end_agents(client, [plan.name])
            return result

        agents = await asyncio.gather(*(agent(p) for p in plans))
        after = await asyncio.to_thread(server.counters)
    seconds = [a.seconds for a in agents]
    calls = [c for a in agents for c in a.calls]
    makespan = max(a.end for a in agents) - min(a.start for a in agents)
    cached = [c.cached_tokens for c in calls if c.cached_tokens is not None]
    prompt = sum(c.prompt_tokens for c in calls)
    return {
        "round": round_index + 1,
        "setup": server.key,
        "makespan": makespan,
        "completion_mean": statistics.fmean(seconds),
        "completion_p50": percentile(seconds, 50),
        "completion_p99": percentile(seconds, 99),
        "completion_tokens": sum(c.completion_tokens for c in calls),
        "prompt_tokens": prompt,
        "cached_prompt_share": (sum(cached) / prompt) if cached and prompt else None,
        "tokens_per_s": sum(c.completion_tokens for c in calls) / makespan if makespan > 0 else 0.0,
        "errors": sum(1 for a in agents if a.error),
        # what the engine did in this round (AIOS: steps, snapshots, restores, decode seconds...; {} for the others)
        "engine": counter_changes(before, after, ENGINE_GAUGES),
        "agents": [{**asdict(a), "seconds": a.seconds} for a in agents],
    }


# --------------------------------------------------------------------------- analysis


def agreement(rounds: list[dict[str, Any]], setups: list[str]) -> dict[str, Any]:
    """Share of calls (agent, turn) whose output text is identical across setups, within each round.

    ``all``: identical in every setup; ``vs_aios[baseline]``: identical between
    that baseline and AIOS. A call that one setup never made counts as different.
    """
    def texts(r: dict[str, Any]) -> dict[tuple[str, int], str]:
        return {(c["agent"], c["turn"]): c["text"] for a in r["agents"] for c in a["calls"] if c["error"] is None}

    by_round: dict[int, dict[str, dict[tuple[str, int], str]]] = {}
    for r in rounds:
        by_round.setdefault(r["round"], {})[r["setup"]] = texts(r)
    same_all = total_all = 0
    pair = {b: [0, 0] for b in setups if b != "aios"}
    for per_setup in by_round.values():
        if len(per_setup) < len(setups):
            continue
        keys = set().union(*(set(t) for t in per_setup.values()))
        for key in keys:
            values = [per_setup[s].get(key) for s in setups]
            total_all += 1
            same_all += all(v is not None and v == values[0] for v in values)
            for b in pair:
                pair[b][1] += 1
                pair[b][0] += per_setup[b].get(key) is not None and per_setup[b].get(key) == per_setup["aios"].get(key)
    return {
        "calls": total_all,
        "identical_all": same_all / total_all if total_all else None,
        "identical_vs_aios": {b: (s / n if n else None) for b, (s, n) in pair.items()} if "aios" in setups else {},
    }


def summarize(rounds: list[dict[str, Any]], setups: list[str]) -> dict[str, Any]:
    keys = ("makespan", "completion_mean", "completion_p50", "completion_p99", "completion_tokens", "prompt_tokens",
            "cached_prompt_share", "tokens_per_s", "errors")
    out: dict[str, Any] = {}
    for s in setups:
        rows = [r for r in rounds if r["setup"] == s]
        out[s] = {"label": SETUP_LABELS.get(s, s), "rounds": len(rows)}
        for k in keys:
            values = [r[k] for r in rows if r.get(k) is not None]
            out[s][k] = statistics.median(values) if values else None
    return out


def ratios(rounds: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """baseline / AIOS for makespan and completion (above 1: AIOS is faster), from medians, and per round."""
    if "aios" not in summary:
        return {}
    out: dict[str, Any] = {}
    ai = summary["aios"]
    for b in COMPARED:
        if b not in summary:
            continue
        base = summary[b]
        per_round = [round(r, 3) for r in per_round_ratios(rounds, b)]
        out[b] = {
            **{k: (base[k] / ai[k] if base.get(k) and ai.get(k) else None)
               for k in ("makespan", "completion_mean", "completion_p50", "completion_p99")},
            "makespan_per_round": per_round,
            "same_completion_tokens": base.get("completion_tokens") == ai.get("completion_tokens"),
        }
    return out


# --------------------------------------------------------------------------- the servers of each model


class _HTTPServer:
    """A server whose agents need no registration (any API key)."""

    def __init__(self, key: str, start: Any, stop: Any, describe: Any) -> None:
        self.key, self._start, self._stop, self._describe = key, start, stop, describe

    def check(self) -> None:
        return None

    def start(self) -> str:
        return self._start()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self._stop()

    async def api_keys(self, client: httpx.AsyncClient, names: list[str]) -> dict[str, str]:
        return {n: "sk-no-key" for n in names}

    def describe(self) -> dict[str, Any]:
        return self._describe()  # type: ignore[no-any-return]

    def counters(self) -> dict[str, float]:
        return {}

    async def end_agents(self, client: httpx.AsyncClient, names: list[str]) -> None:
        return None


class _AIOSServer:
    def __init__(self, serve: Any, key: str = "aios") -> None:
        self.serve = serve
        self.key = key

    def check(self) -> None:
        self.serve.check()

    def start(self) -> str:
        return self.serve.start()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.serve.stop()

    async def api_keys(self, client: httpx.AsyncClient, names: list[str]) -> dict[str, str]:
        return await self.serve.register(client, names)  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        return self.serve.describe()  # type: ignore[no-any-return]

    async def end_agents(self, client: httpx.AsyncClient, names: list[str]) -> None:
        await self.serve.end(client, names)

    def counters(self) -> dict[str, float]:
        return kernel_counters(self.serve)


def kernel_counters(serve: Any, stats: dict[str, Any] | None = None) -> dict[str, float]:
    """The numeric counters of an ``aios serve``'s cores, summed (what a round changed is the difference).

    ``stats``: the kernel's stats already fetched, when the caller needs more of them than the counters.
    """
    out: dict[str, float] = {}
    for pool in (serve.stats() if stats is None else stats).get("pools", {}).values():
        for core in pool.get("cores", []):
            for key, value in {**core, **core.get("extra", {})}.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[key] = out.get(key, 0) + value
    return out


@dataclass(frozen=True)
class StudyOptions:
    levels: tuple[int, ...] = (1, 4, 8, 16, 32)
    shared: tuple[bool, ...] = (True, False)
    setups: tuple[str, ...] = DEFAULT_SETUPS
    turns: int = 4
    rounds: int = 2
    seed: int = 0
    model: str = "local"
    threads: int = 1
    n_ctx: int = 32768
    max_slots: int = 16
    system_words: int = 300
    mean_tokens: int = 64
    max_tokens: int = 256
    tool_delay: float = 0.5
    scheduler: str = "plas"
    sim_costs: dict[str, float] | None = None
    #: extra options of the AIOS core (ablations: prefix_slots, retain_finished, decode_reserve...)
    core_options: tuple[tuple[str, Any], ...] = ()
    #: options of the kernel's scheduler (ablations: PLAS's levels, base, rank...)
    scheduler_options: tuple[tuple[str, Any], ...] = ()
    #: extra command-line arguments of llama-server (a variant of the baseline, e.g. its micro-batch size)
    llama_server_args: tuple[str, ...] = ()
    #: core options of the ``aios_ablated`` setup, over ``core_options`` (none: no such setup)
    ablate_core_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.ablate_core_options and "aios" not in self.setups:
            raise ConfigError("an ablated core is measured against the aios setup: add aios to the setups")

    @property
    def all_setups(self) -> tuple[str, ...]:
        """The setups that run (:func:`setups_run`)."""
        return setups_run(self.setups, self.ablate_core_options)


def make_servers(options: StudyOptions, agents: int, work: Path) -> tuple[dict[str, Server], str]:
    """The setups' servers for one agent count (slots = min(agents, max_slots)), and the model name requests use."""
    from aios.bench.suites.agents.backends import SIM_REALTIME_COSTS, AIOSServe, LocalBackend, SimBackend

    slots = min(agents, options.max_slots)
    servers: dict[str, Server] = {}
    if options.model == "sim":
        costs = dict(options.sim_costs or SIM_REALTIME_COSTS)
        sim = SimBackend(max_batch=slots, seed=options.seed, costs=costs)
        # every request generates exactly its max_tokens: the sim's own length draw is above any budget
        sim_core = {"kind": "sim", "max_batch": slots, "seed": options.seed, "prefix_cache": max(1, slots), **costs,
                    "default_tokens": [1_000_000, 1_000_000]}
        if "native" in options.setups:
            servers["native"] = _HTTPServer("native", lambda: sim.start_native().base_url, sim.stop_native, sim.describe)
        if "llama_server" in options.setups:
            servers["llama_server"] = _HTTPServer("llama_server", lambda: sim.start_batched(slots).base_url, sim.stop_batched, sim.describe)
        model = "sim"
        core = sim_core
    elif options.model == "local":
        local = LocalBackend(
            n_ctx=options.n_ctx, n_threads=options.threads, max_batch=slots, seed=options.seed, model_path=None, log_dir=work / "logs",
            llama_server_args=options.llama_server_args,
        )
        if "native" in options.setups:
            servers["native"] = _HTTPServer("native", lambda: local.start_native().base_url, local.stop_native, local.describe)
        if "llama_server" in options.setups:
            servers["llama_server"] = _HTTPServer("llama_server", lambda: local.start_batched(slots).base_url, local.stop_batched, local.describe)
        model = local.model_name
        core = {"kind": "llamacpp", "max_batch": slots, "n_ctx": options.n_ctx, "n_threads": options.threads, "seed": options.seed}
    else:
        raise ValueError(f"--model must be 'local' or 'sim', not {options.model!r}")
    core = {**core, **dict(options.core_options)}
    if "aios" in options.setups:
        config = {
            "scheduler": options.scheduler, "scheduler_options": dict(options.scheduler_options),
            "data_dir": str(work / "kernel"), "entry_point_plugins": False, "cores": [core],
        }
        servers["aios"] = _AIOSServer(AIOSServe(config, work_dir=work / "aios"))
        if options.ablate_core_options:
            ablated = {**config, "data_dir": str(work / "kernel-ablated"), "cores": [{**core, **dict(options.ablate_core_options)}]}
            servers[ABLATED] = _AIOSServer(AIOSServe(ablated, work_dir=work / "aios-ablated"), ABLATED)
    return servers, model


async def run_level(options: StudyOptions, agents: int, shared: bool, work: Path, console: Any = None) -> dict[str, Any]:
    servers, model = make_servers(options, agents, work)
    spec = WorkloadSpec(
        agents=agents, turns=options.turns, shared=shared, system_words=options.system_words, mean_tokens=options.mean_tokens,
        max_tokens=options.max_tokens, tool_delay=options.tool_delay, seed=options.seed,
    )
    urls: dict[str, str] = {}
    rounds: list[dict[str, Any]] = []
    setups = [s for s in options.all_setups if s in servers]
    try:
        for key in setups:
            urls[key] = await asyncio.to_thread(servers[key].start)
        # warm-up, unrecorded: first requests page the weights in and build the graphs
        warm = make_workload(WorkloadSpec(agents=1, turns=1, mean_tokens=4, min_tokens=4, max_tokens=4, tool_delay=0, system_words=8), tag="warm")
        for key in setups:
            await run_round(servers[key], urls[key], model, warm, round_index=-1, seed=options.seed)
        for i in range(options.rounds):
            plans = make_workload(spec, tag=f"round {i + 1} {os.urandom(3).hex()}")
            for key in round_order(setups, i):
                r = await run_round(servers[key], urls[key], model, plans, round_index=i, seed=options.seed)
                rounds.append(r)
                if console is not None:
                    console.log(
                        f"{agents:2d} agents shared={shared} round {i + 1} {SETUP_LABELS.get(key, key):14s} makespan {r['makespan']:7.2f} s, "
                        f"mean completion {r['completion_mean']:7.2f} s, {r['completion_tokens']} tokens, {r['errors']} errors"
                    )
    finally:
        for key in setups:
            await asyncio.to_thread(servers[key].stop)
    summary = summarize(rounds, setups)
    return {
        "agents": agents,
        "slots": min(agents, options.max_slots),
        "shared": shared,
        "workload": asdict(spec),
        "planned_output_tokens": sum(p.output_tokens for p in make_workload(spec)),
        "servers": {k: s.describe() for k, s in servers.items()},
        "summary": summary,
        "ratios": ratios(rounds, summary),
        "agreement": agreement(rounds, setups),
        "rounds": rounds,
    }


async def check_setups(options: StudyOptions, work: Path) -> None:
    """Every agent count's setups, checked before the first round: ``--core-option`` and ``--scheduler-option``
    values the kernel refuses (or a core option valid at 4 slots but not at 16) stop the study at once."""
    for agents in sorted({min(n, options.max_slots) for n in options.levels}):
        servers, _ = make_servers(options, agents, work / f"check-{agents}")
        for server in servers.values():
            await asyncio.to_thread(server.check)


async def run_study(options: StudyOptions, console: Any = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="aios-agents-study-"))
    started = time.time()
    load = os.getloadavg()
    wheel = llama_cpp_server.wheel_record()
    try:
        await check_setups(options, work)
        levels = [await run_level(options, n, shared, work, console) for shared in options.shared for n in options.levels]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "kind": "aios-bench-agents",
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "load_average_at_start": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
        # the builds that ran: the wheel set-up builds with this checkout's scripts/patches/llama.cpp, and the
        # llama-server binary as its own BUILD_FLAGS describe it ($AIOS_LLAMA_SERVER may be another build)
        "llama_cpp": {**wheel, "server": llama_cpp_server.build_record()},
        "levels": levels,
    }


# --------------------------------------------------------------------------- reporting


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for lv in result["levels"]:
        row: dict[str, Any] = {"agents": lv["agents"], "slots": lv["slots"], "shared": lv["shared"]}
        for s, sm in lv["summary"].items():
            row[f"{s}_makespan"] = sm["makespan"]
            row[f"{s}_mean"] = sm["completion_mean"]
            row[f"{s}_tokens"] = sm["completion_tokens"]
        for b, r in lv["ratios"].items():
            row[f"{b}_makespan_ratio"] = r["makespan"]
            row[f"{b}_mean_ratio"] = r["completion_mean"]
            row[f"{b}_p99_ratio"] = r["completion_p99"]
        row["identical_all"] = lv["agreement"]["identical_all"]
        rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The study as a Markdown table (docs/benchmarks.md): ratios against llama-server first."""
    setups = setups_run(result["options"]["setups"], result["options"].get("ablate_core_options", ()))
    baselines = [b for b in COMPARED if b in setups]
    head = ["agents", "slots", "shared prompt"]
    for s in setups:
        head += [f"{SETUP_LABELS.get(s, s)} makespan s", f"{SETUP_LABELS.get(s, s)} mean s"]
    for b in baselines:
        head += [f"{SETUP_LABELS.get(b, b)} / AIOS makespan", f"{SETUP_LABELS.get(b, b)} / AIOS mean", f"{SETUP_LABELS.get(b, b)} / AIOS p99"]
    head += ["same tokens", "identical outputs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]

    def f(x: Any, fmt: str = "{:.2f}") -> str:
        return "-" if x is None else fmt.format(x)

    for lv in result["levels"]:
        cells = [str(lv["agents"]), str(lv["slots"]), "yes" if lv["shared"] else "no"]
        for s in setups:
            cells += [f(lv["summary"][s]["makespan"], "{:.1f}"), f(lv["summary"][s]["completion_mean"], "{:.1f}")]
        for b in baselines:
            r = lv["ratios"].get(b, {})
            cells += [f"**{f(r.get('makespan'))}x**", f"{f(r.get('completion_mean'))}x", f"{f(r.get('completion_p99'))}x"]
        tokens = {s: lv["summary"][s]["completion_tokens"] for s in setups}
        cells.append("yes" if len(set(tokens.values())) == 1 else "no: " + ", ".join(f"{SETUP_LABELS.get(s, s)} {int(t or 0)}" for s, t in tokens.items()))
        ag = lv["agreement"]["identical_all"]
        cells.append(f(ag, "{:.0%}") if ag is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    for shared, style in ((True, "-"), (False, "--")):
        levels = [lv for lv in result["levels"] if lv["shared"] is shared]
        for b, marker in (("llama_server", "o"), ("native", "^")):
            pts = [(lv["agents"], lv["ratios"][b]["makespan"]) for lv in levels if b in lv["ratios"] and lv["ratios"][b]["makespan"]]
            if pts:
                ax1.plot(*zip(*pts), style, marker=marker, label=f"{SETUP_LABELS[b]} / AIOS, {'shared' if shared else 'no shared'} prompt")
    ax1.axhline(1.0, color="grey", linewidth=0.8)
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("agents")
    ax1.set_ylabel("makespan ratio (above 1: AIOS faster)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    biggest = max(result["levels"], key=lambda lv: (lv["agents"], lv["shared"]))
    for r in biggest["rounds"][: len(biggest["summary"])]:
        xs = sorted(a["seconds"] for a in r["agents"])
        ax2.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=SETUP_LABELS.get(r["setup"], r["setup"]))
    ax2.set_xlabel("agent completion time (s)")
    ax2.set_ylabel("fraction of agents done")
    ax2.set_title(f"{biggest['agents']} agents, {'shared' if biggest['shared'] else 'no shared'} prompt, round 1", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Multi-turn agents (shared / unshared system prompt, heavy-tailed lengths, tool delays): llama-server vs AIOS."""
    import shlex
    import sys

    from rich.console import Console

    parser = argparse.ArgumentParser(prog="aios bench agents", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 4, 8, 16, 32], help="agent counts (default 1 4 8 16 32)")
    parser.add_argument("--shared", choices=["yes", "no", "both"], default="both", help="a system prompt shared by all agents")
    parser.add_argument("--setups", default=",".join(DEFAULT_SETUPS), help="comma list of llama_server, aios, native (serial)")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="rounds; setups rotate their order")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=["local", "sim"], default="local")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (every setup)")
    parser.add_argument("--n-ctx", type=int, default=32768, help="KV cells (llama-server -c with --kv-unified, the core's n_ctx)")
    parser.add_argument("--max-slots", type=int, default=16, help="llama-server -np and the core's max_batch: min(agents, this)")
    parser.add_argument("--system-words", type=int, default=300, help="length of the system prompt in words")
    parser.add_argument("--mean-tokens", type=int, default=64, help="mean output tokens per turn (heavy-tailed)")
    parser.add_argument("--max-tokens", type=int, default=256, help="largest output of one turn")
    parser.add_argument("--tool-delay", type=float, default=0.5, help="mean seconds of a tool call between turns")
    parser.add_argument("--scheduler", default="plas")
    parser.add_argument(
        "--core-option", action="append", default=[], metavar="KEY=VALUE",
        help="an option of the AIOS core (repeatable; JSON values), e.g. prefix_slots=16 for an ablation",
    )
    parser.add_argument(
        "--scheduler-option", action="append", default=[], metavar="KEY=VALUE",
        help="an option of the kernel's scheduler (repeatable; JSON values), e.g. levels=12 for PLAS",
    )
    parser.add_argument(
        "--llama-server-arg", action="append", default=[], metavar="ARG",
        help="an extra llama-server argument (repeatable, after the study's own; e.g. --llama-server-arg=-ub --llama-server-arg=63)",
    )
    parser.add_argument(
        "--ablate-core-option", action="append", default=[], metavar="KEY=VALUE",
        help="a core option of a further setup, aios_ablated: the same kernel with it changed, in the same run "
             "(repeatable; JSON values), e.g. row_pass=false",
    )
    parser.add_argument("--build", action="store_true", help="build llama-server first if it is missing (15-25 minutes)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    setups = tuple(s.strip() for s in args.setups.split(",") if s.strip())
    unknown = set(setups) - {"llama_server", "aios", "native"}
    if unknown or not setups:
        parser.error(f"unknown setups {sorted(unknown)}; choose from llama_server, aios, native")
    if min(args.agents) < 1 or args.turns < 1 or args.rounds < 1:
        parser.error("--agents, --turns and --rounds must be at least 1")
    if args.model == "local" and "llama_server" in setups:
        from aios.bench.suites.agents.llama_cpp_server import LlamaServerMissing, build, find_binary

        try:
            find_binary("llama-server")
        except LlamaServerMissing as exc:
            if not args.build:
                print(exc, file=sys.stderr)
                return 2
            build()
    core_options = key_value_options(parser, "--core-option", args.core_option)
    scheduler_options = key_value_options(parser, "--scheduler-option", args.scheduler_option)
    ablate_core_options = key_value_options(parser, "--ablate-core-option", args.ablate_core_option)
    if ablate_core_options and "aios" not in setups:
        parser.error("--ablate-core-option measures the core against the aios setup: add aios to --setups")
    options = StudyOptions(
        levels=tuple(sorted(set(args.agents))), shared={"yes": (True,), "no": (False,), "both": (True, False)}[args.shared],
        setups=setups, turns=args.turns, rounds=args.rounds, seed=args.seed, model=args.model, threads=args.threads,
        n_ctx=args.n_ctx, max_slots=args.max_slots, system_words=args.system_words, mean_tokens=args.mean_tokens,
        max_tokens=args.max_tokens, tool_delay=args.tool_delay, scheduler=args.scheduler, core_options=core_options,
        scheduler_options=scheduler_options, llama_server_args=tuple(args.llama_server_arg),
        ablate_core_options=ablate_core_options,
    )
    console = Console(stderr=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = asyncio.run(run_study(options, console))
    except ConfigError as exc:
        parser.error(exc.message)
    result["command"] = "aios bench agents " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    print(markdown(result))
    stamp, claim = claim_stamp(args.out, "agents")
    with claim:
        path = args.out / f"agents-{args.model}-{stamp}.json"
        path.write_text(json.dumps(result, indent=2))
        png = plot(result, path.with_suffix(".png"))
    print(f"results: {path}" + (f", plot: {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
