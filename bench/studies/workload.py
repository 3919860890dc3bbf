"""Agent workloads for the scheduler study: three families of programs, the same trace for every setup.

A program is what one agent does: a sequence of dependent LLM calls with tool
time between them. Families (``FAMILIES``), so that no policy is tuned to one trace:

* ``pareto``: heavy-tailed programs (Pareto steps per program and tokens per
  call; a fifth issue parallel calls, as tree-search and map-reduce agents
  do); eight applications share 300-word system prompts; every call is
  independent of the previous ones.
* ``bimodal``: most agents hold short chats (1-3 turns, short answers, a user
  reading between turns); a quarter are long coding programs (4-12 turns of
  writing code and reading test output, longer answers). Every call carries
  the conversation so far, as chat agents and coding agents do.
* ``replay``: programs drawn from the recorded MINT and GAIA runs of the task
  suites (calls per task, tokens per call, shared instruction prompt, the
  growth of the conversation per turn): see :func:`derive_replay` and the
  derived profile ``profiles/replay-mint-gaia.json``.

Arrivals are Poisson. A program's ``history`` flag says whether each call's
prompt carries the conversation so far (earlier inputs and the model's own
answers), which is what an engine's prefix cache can reuse across tool calls.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES = Path(__file__).parent / "profiles"
REPLAY_PROFILE = PROFILES / "replay-mint-gaia.json"


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
    #: each call's prompt carries the conversation so far (the earlier inputs and the model's answers)
    history: bool = False
    #: the output budget the agent asks for per call (the engine reserves KV for prompt + budget)
    max_tokens: int = 1024
    family: str = "pareto"

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens * c.fanout for c in self.calls)


class WorkloadError(ValueError):
    """A workload cannot be built as asked (unknown family, missing or malformed replay profile)."""


def _pareto(rng: random.Random, alpha: float, minimum: float, cap: float) -> float:
    return min(cap, minimum * rng.paretovariate(alpha))


def _words(tag: str, n: int) -> str:
    return " ".join(f"{tag}_{i}" for i in range(n))


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
    """The ``pareto`` family: Poisson arrivals (``arrival_rate`` agents/s); Pareto steps per program and tokens per call.

    A ``parallel_share`` of programs issue their calls ``fanout`` at a time
    (2..``max_fanout``), as tree-search and map-reduce agents do.
    """
    rng = random.Random(seed)
    systems = [_words(f"rule{a}", system_words) for a in range(apps)]
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


def make_bimodal(
    *,
    agents: int = 240,
    seed: int = 0,
    arrival_rate: float = 4.0,
    coding_share: float = 0.25,
    chat_apps: int = 4,
    coding_apps: int = 2,
) -> list[Program]:
    """The ``bimodal`` family: short chats and long coding programs, each call carrying its conversation.

    Chats: 1-3 turns, 10-60-word user messages, answers of 16-128 tokens
    (Pareto), 1 s mean reading time between turns, budget 256 tokens, a
    150-word system prompt per chat app. Coding: 4-12 turns, 30-200 words of
    test output per turn, answers of 48-384 tokens (Pareto), 1.5 s mean tool
    time (running the tests), budget 512, a 400-word system prompt per coding app.
    """
    rng = random.Random(seed)
    chat_systems = [_words(f"chat{a}", 150) for a in range(chat_apps)]
    code_systems = [_words(f"code{a}", 400) for a in range(coding_apps)]
    t = 0.0
    programs = []
    for i in range(agents):
        t += rng.expovariate(arrival_rate)
        if rng.random() < coding_share:
            app = rng.randrange(coding_apps)
            calls = tuple(
                Call(rng.randint(30, 200), int(_pareto(rng, 1.4, 48, 384)), rng.expovariate(1 / 1.5))
                for _ in range(rng.randint(4, 12))
            )
            programs.append(
                Program(f"agent-{i:04d}", chat_apps + app, t, calls, code_systems[app], history=True, max_tokens=512, family="bimodal")
            )
        else:
            app = rng.randrange(chat_apps)
            calls = tuple(
                Call(rng.randint(10, 60), int(_pareto(rng, 1.5, 16, 128)), rng.expovariate(1.0)) for _ in range(rng.randint(1, 3))
            )
            programs.append(Program(f"agent-{i:04d}", app, t, calls, chat_systems[app], history=True, max_tokens=256, family="bimodal"))
    return programs


# --------------------------------------------------------------------------- replayed MINT / GAIA calls

#: Gemma's tokenizer makes about one token of four characters of English (the recorded JSON has only totals)
CHARS_PER_TOKEN = 4.0
#: tool time between turns: the suites run the agent's Python in a sandboxed subprocess (not in the recorded JSON)
REPLAY_TOOL_SECONDS = 0.3


def _tokens(text: str) -> int:
    return max(1, round(len(text) / CHARS_PER_TOKEN))


def _suite_prompts() -> dict[str, Any]:
    """The suites' shared instructions and MINT's task prompts (for the per-task split of the first prompt)."""
    from aios.bench.suites.tasks import gaia, mint

    shared = {
        "mint-reasoning": mint.PROTOCOL.format(steps=mint.MAX_STEPS, proposals=mint.MAX_PROPOSALS, example=mint.EXAMPLE_REASONING, task=""),
        "mint-code": mint.PROTOCOL.format(steps=mint.MAX_STEPS, proposals=mint.MAX_PROPOSALS, example=mint.EXAMPLE_CODE, task=""),
        "gaia": gaia.SYSTEM,
    }
    tasks: dict[str, str] = {}
    root = mint.default_data_dir()
    for subset in mint.SUBSETS:
        path = root / subset / "test_prompts.json"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    tasks[f"{subset}/{row['id']}"] = row["prompt"]
    return {"shared": shared, "tasks": tasks, "code_subsets": mint.CODE_SUBSETS}


def derive_replay(recorded: list[Path]) -> dict[str, Any]:
    """Per-task program shapes from recorded suite runs (``aios-bench-comparison`` JSON of MINT / GAIA).

    The JSON records, per round, each task's number of LLM calls and the
    round's total prompt and completion tokens (not per call). From the round
    without AIOS (every prompt computed in full) this derives: output tokens
    per call = completion tokens / calls (the runs hit their max_tokens); the
    first prompt of a task = the suite's shared instructions + the task text
    (MINT's prompt file, ``CHARS_PER_TOKEN``); and the tokens a turn adds
    besides the answer (observation + feedback) as the value that makes the
    round's prompt total come out right.
    """
    texts = _suite_prompts()
    programs: list[dict[str, Any]] = []
    sources = []
    for path in recorded:
        data = json.loads(path.read_text())
        if data.get("kind") != "aios-bench-comparison" or data.get("suite") not in ("mint", "gaia"):
            raise WorkloadError(f"{path} is not a recorded MINT or GAIA comparison (kind aios-bench-comparison)")
        suite = data["suite"]
        rounds = [r for r in data["rounds"] if r["setup"] == "native"]
        if not rounds:
            raise WorkloadError(f"{path} has no round without AIOS to derive full prompt sizes from")
        rnd = rounds[0]
        out = round(rnd["completion_tokens"] / rnd["llm_calls"])
        shapes = []
        for agent in rnd["agents"]:
            task = agent["task_id"]
            if suite == "gaia":
                app, task_text = "gaia", ""
            else:
                subset = task.split("/")[0]
                app = "mint-code" if subset in texts["code_subsets"] else "mint-reasoning"
                task_text = texts["tasks"].get(task, "")
            shapes.append({"task": f"{suite}:{task}", "app": app, "system_tokens": _tokens(texts["shared"][app]),
                           "task_tokens": _tokens(task_text) if task_text else 0, "calls": int(agent["replies"])})
        known = [s["task_tokens"] for s in shapes if s["task_tokens"]]
        first_total = sum(s["calls"] * (s["system_tokens"] + s["task_tokens"]) for s in shapes)
        growth_turns = sum(s["calls"] * (s["calls"] - 1) // 2 for s in shapes)
        if not known:
            # no task texts: the first prompts take what the round's total leaves after the growth of longer episodes
            per_call = rnd["prompt_tokens"] / rnd["llm_calls"]
            for s in shapes:
                s["task_tokens"] = max(1, round(per_call - s["system_tokens"]))
            first_total = sum(s["calls"] * (s["system_tokens"] + s["task_tokens"]) for s in shapes)
        observation = max(0, round((rnd["prompt_tokens"] - first_total) / growth_turns - out)) if growth_turns else 0
        for s in shapes:
            s.update(output_tokens=out, observation_tokens=observation)
        programs += shapes
        sources.append({"file": path.name, "suite": suite, "round": rnd["round"], "calls": rnd["llm_calls"],
                        "prompt_tokens": rnd["prompt_tokens"], "completion_tokens": rnd["completion_tokens"],
                        "output_tokens_per_call": out, "observation_tokens_per_turn": observation,
                        "task_texts_found": len(known)})
    return {
        "kind": "aios-replay-profile",
        "derivation": " ".join((derive_replay.__doc__ or "").split("\n\n")[1].split()),
        "chars_per_token": CHARS_PER_TOKEN,
        "tool_seconds": REPLAY_TOOL_SECONDS,
        "sources": sources,
        "programs": programs,
    }


def load_replay(path: Path = REPLAY_PROFILE) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WorkloadError(f"replay profile {path} is missing; derive it with python -m aios.bench.studies.workload --derive-replay") from None
    if data.get("kind") != "aios-replay-profile" or not data.get("programs"):
        raise WorkloadError(f"{path} is not a replay profile (kind aios-replay-profile with programs)")
    return data


def make_replay(*, agents: int = 240, seed: int = 0, arrival_rate: float = 4.0, profile: dict[str, Any] | None = None) -> list[Program]:
    """The ``replay`` family: agents drawn (with replacement) from the recorded MINT / GAIA task shapes.

    Call k of a task carries the shared instructions, the task, and k earlier
    turns (the model's answer plus the observation each)."""
    data = profile or load_replay()
    rng = random.Random(seed)
    apps = sorted({s["app"] for s in data["programs"]})
    systems = {app: _words(app.replace("-", "_"), max(1, s["system_tokens"] - 4)) for app in apps
               for s in data["programs"] if s["app"] == app}
    tool = float(data.get("tool_seconds", REPLAY_TOOL_SECONDS))
    t = 0.0
    programs = []
    for i in range(agents):
        t += rng.expovariate(arrival_rate)
        s = rng.choice(data["programs"])
        calls = tuple(
            Call(max(1, (s["task_tokens"] if k == 0 else s["observation_tokens"]) - 4), s["output_tokens"], tool)
            for k in range(s["calls"])
        )
        programs.append(Program(f"agent-{i:04d}", apps.index(s["app"]), t, calls, systems[s["app"]], history=True,
                                max_tokens=s["output_tokens"], family="replay"))
    return programs


FAMILIES = {"pareto": make_trace, "bimodal": make_bimodal, "replay": make_replay}


def make_family(family: str, *, agents: int, seed: int, arrival_rate: float) -> list[Program]:
    try:
        make = FAMILIES[family]
    except KeyError:
        raise WorkloadError(f"unknown workload family {family!r}; choose from {', '.join(FAMILIES)}") from None
    return make(agents=agents, seed=seed, arrival_rate=arrival_rate)


def describe(trace: list[Program]) -> dict[str, Any]:
    """Counts that characterise a trace (for the study's JSON)."""
    calls = [c for p in trace for c in p.calls]
    return {
        "programs": len(trace),
        "calls": sum(c.fanout for c in calls),
        "output_tokens": sum(p.output_tokens for p in trace),
        "calls_max": max(len(p.calls) for p in trace),
        "calls_mean": statistics.fmean(len(p.calls) for p in trace),
        "with_history": sum(p.history for p in trace),
        "apps": len({p.app for p in trace}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aios.bench.studies.workload", description="Derive the replay family's profile from recorded suite runs.")
    parser.add_argument("--derive-replay", nargs="+", type=Path, metavar="JSON", required=True,
                        help="recorded MINT / GAIA comparison JSON (docs/benchmarks/mint-*.json gaia-*.json)")
    parser.add_argument("--out", type=Path, default=REPLAY_PROFILE)
    args = parser.parse_args(argv)
    profile = derive_replay(args.derive_replay)
    profile["command"] = "python -m aios.bench.studies.workload --derive-replay " + " ".join(str(p) for p in args.derive_replay)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(profile, indent=1) + "\n")
    print(json.dumps(profile["sources"], indent=1))
    print(f"{len(profile['programs'])} task shapes written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
