"""Reporting a with/without comparison: a table on the terminal, a JSON file and a PNG of plots.

Only the suite that ran is reported, under the label of its task set (official
data or an AIOS offline stand-in, full set or a subset): no score is ever
printed for a set that was not run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aios.bench.result_stamps import claim_stamp
from aios.bench.suites.modes import BASELINES, SETUP_LABELS, SETUPS

COLORS = {"native": "#d95f02", "llama_server": "#7570b3", "aios": "#1b9e77"}


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
        f"({backend.get('model')}) · {o['rounds']} rounds, order rotating · seed {o['seed']} · max_tokens {o['max_tokens']}"
    )


def _setups(result: dict[str, Any]) -> list[str]:
    return [s for s in SETUPS if s in result["summary"]]


def _baselines(result: dict[str, Any]) -> list[str]:
    return [b for b in BASELINES if b in result["summary"] and "aios" in result["summary"]]


#: (label, summary key, format, whether a baseline / AIOS ratio is shown)
ROWS = (
    ("makespan s", "makespan", "f", True),
    ("agents per minute", "agents_per_min", "f", False),
    ("agent completion mean s", "completion_mean", "f", True),
    ("agent completion p50 s", "completion_p50", "f", True),
    ("agent completion p99 s", "completion_p99", "f", True),
    ("queue-wait share of LLM call time", "queue_wait_share", "pct", False),
    ("generated tokens/s", "tokens_per_s", "f", False),
    ("LLM calls", "llm_calls", "int", False),
    ("generated tokens", "completion_tokens", "int", False),
    ("mean batch size (AIOS engine)", "mean_batch", "f", False),
    ("prompt tokens from the prefix cache (AIOS engine)", "prefix_hit_rate", "pct", False),
    ("agents that errored", "errors", "int", False),
)


def _cells(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The comparison as a header and rows of text cells (terminal and Markdown alike)."""
    summary = result["summary"]
    setups, baselines = _setups(result), _baselines(result)
    header = ["metric (median over rounds)"] + [SETUP_LABELS[s] for s in setups] + [f"{SETUP_LABELS[b]} / AIOS" for b in baselines]
    rows = [[
        "success rate (all rounds)",
        *(f"{_fmt(summary[s].get('success_rate'), 'pct')} ({summary[s].get('passed', 0)}/{summary[s].get('attempts', 0)})" for s in setups),
        *("" for _ in baselines),
    ]]
    for label, key, kind, with_ratio in ROWS:
        row = [label, *(_fmt(summary[s].get(key), kind) for s in setups)]
        for b in baselines:
            x, y = summary[b].get(key), summary["aios"].get(key)
            row.append(f"{x / y:.2f}x" if with_ratio and x and y else "")
        rows.append(row)
    if "aios" in summary:
        ai = summary["aios"]
        over = f"{_fmt(ai.get('overhead_us_median'), 'int')} µs ({_fmt(ai.get('overhead_share'), 'pct')} of call time)" if ai.get("overhead_us_median") is not None else "-"
        rows.append(["kernel overhead per LLM call", *(over if s == "aios" else "-" for s in setups), *("" for _ in baselines)])
    return header, rows


def _notes(result: dict[str, Any]) -> list[str]:
    notes = []
    for b, r in result["ratios"].items():
        per_round = ", ".join(f"{x:.2f}x" for x in r["makespan_per_round"])
        verdict = "yes" if r["success_not_lower_with_aios"] else "NO"
        notes.append(f"makespan {SETUP_LABELS[b]} / AIOS: {_fmt(r['makespan'])}x (per round: {per_round}); success with AIOS not lower: {verdict}")
    ag = result["agreement"]
    if ag.get("replies_compared"):
        pairs = ", ".join(f"{SETUP_LABELS[b]} vs AIOS {_fmt(v, 'pct')}" for b, v in ag.get("replies_identical_vs_aios", {}).items())
        notes.append(f"agent replies with identical text in every setup: {_fmt(ag['replies_identical_all'], 'pct')} of {ag['replies_compared']} ({pairs})")
    differ = ag["tasks_with_different_verdicts"]
    if differ:
        notes.append(f"tasks whose verdict differs between the setups: {', '.join(differ)}")
    return notes


def print_report(result: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    header, rows = _cells(result)
    table = Table(title=escape(headline(result)), title_justify="left")
    table.add_column(header[0])
    for h in header[1:]:
        table.add_column(escape(h), justify="right")
    for row in rows:
        table.add_row(*(escape(c) for c in row))
    console.print(table)
    for note in _notes(result):
        console.print(escape(note))
    if not result["task_set"]["official"]:
        console.print("[yellow]task set: an AIOS-made offline stand-in in the official schema; this is NOT a score on the official benchmark[/yellow]")


def write_json(result: dict[str, Any], out: Path) -> Path:
    """Write the result under a stamp no other run holds (two suites ending in one second keep both files)."""
    stamp, claim = claim_stamp(out, result["suite"])
    with claim:
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
    setups = _setups(result)
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    (ax_make, ax_cdf), (ax_time, ax_calls) = axes

    # 1. makespan per round, one bar per setup
    n = max(r["round"] for r in rounds)
    width = 0.8 / max(1, len(setups))
    for j, setup in enumerate(setups):
        offset = (j - (len(setups) - 1) / 2) * width
        xs = [r["round"] + offset for r in rounds if r["setup"] == setup]
        ys = [r["makespan"] for r in rounds if r["setup"] == setup]
        ax_make.bar(xs, ys, width=width, color=COLORS[setup], label=SETUP_LABELS[setup])
    first = _baselines(result)[:1]
    if first:
        for ratio, i in zip(result["ratios"][first[0]]["makespan_per_round"], range(1, n + 1)):
            top = max(r["makespan"] for r in rounds if r["round"] == i)
            ax_make.annotate(f"{ratio:.2f}x", (i, top), ha="center", va="bottom", fontsize=10)
    ax_make.set_xticks(range(1, n + 1), [f"round {i}" for i in range(1, n + 1)])
    ax_make.set_ylabel("makespan (s)")
    ax_make.set_title("Time to finish all tasks" + (f" (label: {SETUP_LABELS[first[0]]} / AIOS)" if first else ""))
    ax_make.legend()

    # 2. CDF of per-agent completion time, all rounds
    for setup in setups:
        xs = sorted(a["seconds"] for r in rounds if r["setup"] == setup for a in r["agents"])
        if xs:
            ax_cdf.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], color=COLORS[setup], label=SETUP_LABELS[setup])
    ax_cdf.set_xlabel("agent completion time (s)")
    ax_cdf.set_ylabel("fraction of agents done")
    ax_cdf.set_title("Per-agent completion time (CDF, all rounds)")
    ax_cdf.legend()

    # 3. timeline of the last round of each setup: one line per agent
    y = 0
    ticks = []
    for setup in setups:
        last = [r for r in rounds if r["setup"] == setup][-1:]
        if not last:
            continue
        agents = sorted(last[0]["agents"], key=lambda a: a["start"])
        top = y
        for a in agents:
            ax_time.plot([a["start"], a["end"]], [y, y], color=COLORS[setup], linewidth=3, alpha=0.9 if a["passed"] else 0.5)
            if a["passed"]:
                ax_time.plot([a["end"]], [y], marker="o", color="black", markersize=3)
            y += 1
        ticks.append(((top + y - 1) / 2, f"{SETUP_LABELS[setup]}\n(round {last[0]['round']})"))
        y += 2
    ax_time.set_yticks([t for t, _ in ticks], [label for _, label in ticks])
    ax_time.set_xlabel("seconds since the round started")
    ax_time.set_title("Agents over time (one line per agent; dot: task passed)")

    # 4. where an LLM call's time goes
    summary = result["summary"]
    waits = [summary[s]["mean_call_latency"] * summary[s]["queue_wait_share"] for s in setups]
    service = [summary[s]["mean_call_latency"] - w for s, w in zip(setups, waits)]
    xs = range(len(setups))
    ax_calls.bar(xs, service, color=[COLORS[s] for s in setups], label="being served")
    ax_calls.bar(xs, waits, bottom=service, color="#bbbbbb", label="waiting in a queue (serial server only: derived)")
    for i, s in enumerate(setups):
        sm = summary[s]
        ax_calls.annotate(
            f"success {100 * sm['success_rate']:.1f}% ({sm['passed']}/{sm['attempts']})\n{sm['tokens_per_s']:.1f} tokens/s",
            (i, summary[s]["mean_call_latency"]), ha="center", va="bottom", fontsize=9,
        )
    ax_calls.set_xticks(list(xs), [SETUP_LABELS[s] for s in setups])
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
    backend = result["environment"]["backend"]
    servers = "; ".join(str(backend[k]) for k in ("batched_server", "native_server") if k in backend)
    header, rows = _cells(result)
    lines = [
        f"**{headline(result)}**",
        "",
        f"Command: `{result.get('command', '(run through bench.suite.compare)')}`  ",
        f"Run {result['started']}, {result['wall_seconds'] / 60:.0f} min wall, load average at start "
        f"{', '.join(f'{x:.1f}' for x in (result['environment'].get('load_average_at_start') or []))}; servers without AIOS: {servers}",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for row in rows:
        cells = list(row)
        if row[0] == "makespan s":
            cells = [c if not c.endswith("x") else f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    notes = _notes(result)
    if notes:
        lines += ["", *(n[0].upper() + n[1:] + "." for n in notes)]
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
