"""Reporting a with/without comparison: a table on the terminal, a JSON file and a PNG of plots.

Only the suite that ran is reported, under the label of its task set (official
data or an AIOS offline stand-in, full set or a subset): no score is ever
printed for a set that was not run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

COLORS = {"native": "#d95f02", "aios": "#1b9e77"}


def _fmt(value: Any, kind: str = "f") -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.2f}"


def headline(result: dict[str, Any]) -> str:
    ts = result["task_set"]
    o = result["options"]
    backend = result["environment"]["backend"]
    return (
        f"{ts['label']} · framework {result['framework']} · {o['agents']} agents at once · model {o['model']} "
        f"({backend.get('model')}) · {o['rounds']} rounds alternating · seed {o['seed']} · max_tokens {o['max_tokens']}"
    )


def print_report(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    summary, ratios = result["summary"], result["ratios"]
    nat, ai = summary.get("native", {}), summary.get("aios", {})
    from rich.markup import escape

    table = Table(title=escape(headline(result)), title_justify="left")
    table.add_column("metric (median over rounds)")
    table.add_column("without AIOS", justify="right")
    table.add_column("with AIOS", justify="right")
    table.add_column("without / with", justify="right")

    def row(label: str, key: str, kind: str = "f", ratio: bool = False) -> None:
        a, b = nat.get(key), ai.get(key)
        r = f"{a / b:.2f}x" if ratio and a and b else ""
        table.add_row(label, _fmt(a, kind), _fmt(b, kind), r)

    table.add_row(
        "success rate (all rounds)",
        f"{_fmt(nat.get('success_rate'), 'pct')} ({nat.get('passed', 0)}/{nat.get('attempts', 0)})",
        f"{_fmt(ai.get('success_rate'), 'pct')} ({ai.get('passed', 0)}/{ai.get('attempts', 0)})",
        "",
    )
    row("makespan s", "makespan", ratio=True)
    row("agents per minute", "agents_per_min")
    row("agent completion mean s", "completion_mean", ratio=True)
    row("agent completion p50 s", "completion_p50", ratio=True)
    row("agent completion p99 s", "completion_p99", ratio=True)
    row("queue-wait share of LLM call time", "queue_wait_share", "pct")
    row("generated tokens/s", "tokens_per_s")
    row("LLM calls", "llm_calls", "int")
    row("mean batch size (engine)", "mean_batch")
    row("prompt tokens from the prefix cache (engine)", "prefix_hit_rate", "pct")
    table.add_row(
        "kernel overhead per LLM call",
        "-",
        f"{_fmt(ai.get('overhead_us_median'), 'int')} µs ({_fmt(ai.get('overhead_share'), 'pct')} of call time)"
        if ai.get("overhead_us_median") is not None else "-",
        "",
    )
    row("agents that errored", "errors", "int")
    console.print(table)
    if ratios:
        per_round = ", ".join(f"{r:.2f}x" for r in ratios["makespan_per_round"])
        verdict = "yes" if ratios["success_not_lower_with_aios"] else "NO"
        console.print(
            f"makespan without/with AIOS: {ratios['makespan_without_over_with']:.2f}x (per round: {per_round}); "
            f"success with AIOS not lower: {verdict}"
        )
    differ = result["agreement"]["tasks_with_different_verdicts"]
    if differ:
        console.print(f"tasks whose verdict differs between the setups: {', '.join(differ)}")
    if not result["task_set"]["official"]:
        console.print("[yellow]task set: an AIOS-made offline stand-in in the official schema; this is NOT a score on the official benchmark[/yellow]")


def write_json(result: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"{result['suite']}-{result['framework']}-{result['options']['model']}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def plot(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rounds = result["rounds"]
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    (ax_make, ax_cdf), (ax_time, ax_calls) = axes
    labels = {"native": "without AIOS", "aios": "with AIOS"}

    # 1. makespan per round
    n = max(r["round"] for r in rounds)
    for offset, setup in ((-0.2, "native"), (0.2, "aios")):
        xs = [r["round"] + offset for r in rounds if r["setup"] == setup]
        ys = [r["makespan"] for r in rounds if r["setup"] == setup]
        ax_make.bar(xs, ys, width=0.4, color=COLORS[setup], label=labels[setup])
    for ratio, i in zip(result["ratios"].get("makespan_per_round", []), range(1, n + 1)):
        top = max(r["makespan"] for r in rounds if r["round"] == i)
        ax_make.annotate(f"{ratio:.2f}x", (i, top), ha="center", va="bottom", fontsize=10)
    ax_make.set_xticks(range(1, n + 1), [f"round {i}" for i in range(1, n + 1)])
    ax_make.set_ylabel("makespan (s)")
    ax_make.set_title("Time to finish all tasks (label: without / with)")
    ax_make.legend()

    # 2. CDF of per-agent completion time, all rounds
    for setup in ("native", "aios"):
        xs = sorted(a["seconds"] for r in rounds if r["setup"] == setup for a in r["agents"])
        if xs:
            ax_cdf.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], color=COLORS[setup], label=labels[setup])
    ax_cdf.set_xlabel("agent completion time (s)")
    ax_cdf.set_ylabel("fraction of agents done")
    ax_cdf.set_title("Per-agent completion time (CDF, all rounds)")
    ax_cdf.legend()

    # 3. timeline of the last round of each setup: one line per agent
    y = 0
    ticks = []
    for setup in ("native", "aios"):
        last = [r for r in rounds if r["setup"] == setup][-1:]
        if not last:
            continue
        agents = sorted(last[0]["agents"], key=lambda a: a["start"])
        first = y
        for a in agents:
            color = COLORS[setup] if a["passed"] else COLORS[setup]
            ax_time.plot([a["start"], a["end"]], [y, y], color=color, linewidth=3, alpha=0.9 if a["passed"] else 0.5)
            if a["passed"]:
                ax_time.plot([a["end"]], [y], marker="o", color="black", markersize=3)
            y += 1
        ticks.append(((first + y - 1) / 2, f"{labels[setup]}\n(round {last[0]['round']})"))
        y += 2
    ax_time.set_yticks([t for t, _ in ticks], [label for _, label in ticks])
    ax_time.set_xlabel("seconds since the round started")
    ax_time.set_title("Agents over time (one line per agent; dot: task passed)")

    # 4. where an LLM call's time goes
    summary = result["summary"]
    setups = [s for s in ("native", "aios") if s in summary]
    waits = [summary[s]["mean_call_latency"] * summary[s]["queue_wait_share"] for s in setups]
    service = [summary[s]["mean_call_latency"] - w for s, w in zip(setups, waits)]
    xs = range(len(setups))
    ax_calls.bar(xs, service, color=[COLORS[s] for s in setups], label="being served")
    ax_calls.bar(xs, waits, bottom=service, color="#bbbbbb", label="waiting in a queue")
    for i, s in enumerate(setups):
        sm = summary[s]
        ax_calls.annotate(
            f"success {100 * sm['success_rate']:.1f}% ({sm['passed']}/{sm['attempts']})\n{sm['tokens_per_s']:.1f} tokens/s",
            (i, summary[s]["mean_call_latency"]), ha="center", va="bottom", fontsize=9,
        )
    ax_calls.set_xticks(list(xs), [labels[s] for s in setups])
    ax_calls.set_ylabel("mean LLM call latency (s)")
    ax_calls.set_title("Where an LLM call's time goes (medians over rounds)")
    ax_calls.legend(loc="upper right")
    ax_calls.margins(y=0.25)

    fig.suptitle(headline(result), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table (for docs/benchmarks.md), with the command that produced it."""
    nat, ai = result["summary"].get("native", {}), result["summary"].get("aios", {})
    ratios = result["ratios"]

    def cell(s: dict[str, Any], key: str, kind: str = "f") -> str:
        return _fmt(s.get(key), kind)

    def ratio(key: str) -> str:
        a, b = nat.get(key), ai.get(key)
        return f"{a / b:.2f}x" if a and b else ""

    lines = [
        f"**{headline(result)}**",
        "",
        f"Command: `{result.get('command', '(run through bench.suite.compare)')}`  ",
        f"Run {result['started']}, {result['wall_seconds'] / 60:.0f} min wall, load average at start "
        f"{', '.join(f'{x:.1f}' for x in (result['environment'].get('load_average_at_start') or []))}; "
        f"backend: {result['environment']['backend'].get('native_server', '')}",
        "",
        "| metric (median over rounds) | without AIOS | with AIOS | without / with |",
        "|---|---:|---:|---:|",
        f"| success rate (all rounds) | {cell(nat, 'success_rate', 'pct')} ({nat.get('passed', 0)}/{nat.get('attempts', 0)}) "
        f"| {cell(ai, 'success_rate', 'pct')} ({ai.get('passed', 0)}/{ai.get('attempts', 0)}) | |",
        f"| makespan s | {cell(nat, 'makespan')} | {cell(ai, 'makespan')} | **{ratio('makespan')}** |",
        f"| agents per minute | {cell(nat, 'agents_per_min')} | {cell(ai, 'agents_per_min')} | |",
        f"| agent completion mean s | {cell(nat, 'completion_mean')} | {cell(ai, 'completion_mean')} | {ratio('completion_mean')} |",
        f"| agent completion p50 s | {cell(nat, 'completion_p50')} | {cell(ai, 'completion_p50')} | {ratio('completion_p50')} |",
        f"| agent completion p99 s | {cell(nat, 'completion_p99')} | {cell(ai, 'completion_p99')} | {ratio('completion_p99')} |",
        f"| queue-wait share of LLM call time | {cell(nat, 'queue_wait_share', 'pct')} | {cell(ai, 'queue_wait_share', 'pct')} | |",
        f"| generated tokens/s | {cell(nat, 'tokens_per_s')} | {cell(ai, 'tokens_per_s')} | |",
        f"| LLM calls | {cell(nat, 'llm_calls', 'int')} | {cell(ai, 'llm_calls', 'int')} | |",
        f"| mean batch size (engine) | - | {cell(ai, 'mean_batch')} | |",
        f"| prompt tokens from the prefix cache (engine) | - | {cell(ai, 'prefix_hit_rate', 'pct')} | |",
        f"| kernel overhead per LLM call | - | {cell(ai, 'overhead_us_median', 'int')} µs ({cell(ai, 'overhead_share', 'pct')} of call time) | |",
        f"| agents that errored | {cell(nat, 'errors', 'int')} | {cell(ai, 'errors', 'int')} | |",
    ]
    if ratios:
        per_round = ", ".join(f"{r:.2f}x" for r in ratios["makespan_per_round"])
        lines += ["", f"Makespan ratio per round: {per_round}. Success with AIOS not lower: {'yes' if ratios['success_not_lower_with_aios'] else 'NO'}."]
    differ = result["agreement"]["tasks_with_different_verdicts"]
    if differ:
        lines.append(f"Tasks whose verdict differs between the setups: {', '.join(differ)}.")
    if not result["task_set"]["official"]:
        lines.append("Task set: an AIOS-made offline stand-in in the official schema; NOT a score on the official benchmark.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m aios.bench.suites.report", description="Render comparison results as Markdown.")
    parser.add_argument("results", nargs="+", type=Path, help="JSON files written by bench.humaneval / mint / gaia / swebench")
    args = parser.parse_args(argv)
    for path in args.results:
        print(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
