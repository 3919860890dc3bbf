"""What ``aios run`` does: several agents share one model through the kernel, and you see how it went.

Each agent is a small program of dependent LLM calls (plan, then answer) —
the shape of real agent work — and all of them run at once. The table shows,
per agent, its answer and where its time went (queueing vs. generating), and
the totals show what the scheduler and the batching core achieved.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aios_core.kernel import Kernel

TASKS: tuple[tuple[str, str], ...] = (
    ("poet", "Write a four-line poem about a kernel that schedules agents."),
    ("mathematician", "What is 17 multiplied by 23? Show the steps briefly."),
    ("historian", "In two sentences, why did time-sharing operating systems matter?"),
    ("chef", "Give a three-step recipe for a quick tomato pasta."),
    ("coach", "Give three short tips for a beginner runner."),
    ("coder", "Write a Python function that reverses a string, with a docstring."),
    ("traveler", "Name three things to pack for a rainy city trip, with one reason each."),
    ("scientist", "Explain photosynthesis to a ten-year-old in three sentences."),
)


#: one system prompt for every agent, as agents of one application share theirs: the core computes it once
SYSTEM = "Answer each question directly and briefly, in plain English."


@dataclass
class AgentOutcome:
    agent: str
    answer: str
    calls: int
    completion_tokens: int
    waiting: float
    service: float
    turnaround: float
    preemptions: int
    error: str | None = None


async def _one_agent(kernel: Kernel, name: str, task: str, max_tokens: int) -> AgentOutcome:
    agent = kernel.agent(name)
    start = asyncio.get_running_loop().time()
    waiting = service = 0.0
    tokens = preemptions = 0
    try:
        plan_call = agent.llm_syscall(
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Task: {task}\nBefore answering, list in one short line the key points you will cover."},
            ],
            max_tokens=max_tokens // 2,
        )
        plan = await kernel.acall(plan_call)
        answer_call = agent.llm_syscall(
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Task: {task}"},
                {"role": "assistant", "content": plan.content or ""},
                {"role": "user", "content": "Now give the final answer, concisely."},
            ],
            max_tokens=max_tokens,
        )
        answer = await kernel.acall(answer_call)
        for call, response in ((plan_call, plan), (answer_call, answer)):
            waiting += call.timing.waiting or 0.0
            service += call.timing.service
            tokens += response.usage.completion_tokens
            preemptions += call.timing.preemptions
        text, error = (answer.content or "").strip(), None
    except Exception as exc:  # noqa: BLE001 - reported in the table, the other agents carry on
        text, error = "", f"{type(exc).__name__}: {exc}"
    return AgentOutcome(
        agent=name,
        answer=text,
        calls=2,
        completion_tokens=tokens,
        waiting=waiting,
        service=service,
        turnaround=asyncio.get_running_loop().time() - start,
        preemptions=preemptions,
        error=error,
    )


async def run_job(kernel: Kernel, *, agents: int = 6, max_tokens: int = 96) -> dict[str, Any]:
    """Run ``agents`` concurrent agents on a started kernel; return per-agent outcomes and totals."""
    tasks = [TASKS[i % len(TASKS)] for i in range(agents)]
    t0 = time.perf_counter()
    outcomes = await asyncio.gather(
        *[_one_agent(kernel, f"{role}-{i}", task, max_tokens) for i, (role, task) in enumerate(tasks)]
    )
    makespan = time.perf_counter() - t0
    stats = kernel.stats()
    cores = [c for pool in stats["pools"].values() for c in pool["cores"]]
    tokens = sum(o.completion_tokens for o in outcomes)
    return {
        "outcomes": outcomes,
        "makespan": makespan,
        "tokens": tokens,
        "tokens_per_second": tokens / makespan if makespan > 0 else 0.0,
        "mean_batch": max((c["mean_batch"] for c in cores), default=0.0),
        "prefix_hit_rate": max((c["prefix_hit_rate"] for c in cores), default=0.0),
        "snapshots": stats["snapshots"],
        "scheduler": ", ".join(p["scheduler"] for p in stats["pools"].values()),
        "cores": ", ".join(f"{c['name']} ({c['model']})" for c in cores),
        "failed": sum(o.error is not None for o in outcomes),
    }


def render(result: dict[str, Any]) -> Any:
    """A rich renderable of the job's outcome."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="AIOS run: agents sharing one model", show_lines=True)
    for col, kw in (
        ("agent", {}),
        ("answer", {"ratio": 3, "overflow": "fold"}),
        ("tokens", {"justify": "right"}),
        ("wait s", {"justify": "right"}),
        ("gen s", {"justify": "right"}),
        ("total s", {"justify": "right"}),
        ("preempt", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    for o in result["outcomes"]:
        answer = " ".join(o.answer.split())  # one line per agent: the table is for scanning
        answer = answer if len(answer) <= 160 else answer[:160] + "..."
        table.add_row(
            o.agent,
            escape(answer) if o.error is None else f"[red]{escape(o.error)}[/red]",
            str(o.completion_tokens),
            f"{o.waiting:.2f}",
            f"{o.service:.2f}",
            f"{o.turnaround:.2f}",
            str(o.preemptions),
        )
    totals = Table.grid(padding=(0, 2))
    totals.add_row("cores", result["cores"])
    totals.add_row("scheduler", result["scheduler"])
    totals.add_row("makespan", f"{result['makespan']:.2f} s")
    totals.add_row("generated", f"{result['tokens']} tokens, {result['tokens_per_second']:.1f} tokens/s aggregate")
    totals.add_row("mean batch", f"{result['mean_batch']:.2f} sequences per engine step")
    totals.add_row("prefix cache hit rate", f"{100 * result['prefix_hit_rate']:.1f}% of prompt tokens")
    totals.add_row("snapshots", f"{result['snapshots']['saved']} taken, {result['snapshots']['restored']} restored")
    totals.add_row("failed agents", str(result["failed"]))
    return Group(table, totals)
