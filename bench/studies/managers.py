"""The managers' benchmark: memory under eviction, storage durability cost, tool-call parallelism.

    python -m aios.bench.studies.managers [--seed 0] [--ops 3000] [--embedder hashing|minilm] [--out bench/results]

Memory: several agents replay the same seeded trace (a skewed "hot" set of
items, a stream of one-off notes and lookups that scan, and similarity
searches) against a per-agent limit of a quarter of their working set, under
LRU-2, plain LRU and no limit. Reported: hit rate, evictions, and latency of
gets and searches (evicted items are reloaded from SQLite).

Storage: versioned writes with ``synchronous=FULL`` (survives power loss) and
``NORMAL`` (survives process crashes), reads, and vector search over 1,000 files.

Tools: the same batch of independent calls issued as one syscall, run in
parallel (the tool manager's default) and one at a time (what the reference
AIOS did under its global lock), for an I/O-bound tool (50 ms wait, like a web
API) and for a sandboxed compute tool (a subprocess per call).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aios.bench.studies import managers_tools
from rich.console import Console
from rich.table import Table

from aios_core.agents import AgentRecord
from aios_core.managers.embeddings import EmbeddingConfig, make_embedder
from aios_core.managers.factory import ManagersConfig, build_managers
from aios_core.syscalls import ToolCall

WORDS = (
    "rocket orbit launch fuel engine satellite cat dog bird fish garden apple banana bread cheese river mountain forest ocean "
    "python compile test debug deploy server network packet socket kernel memory storage cache queue thread lock file disk "
    "invoice budget tax report meeting agenda deadline project budget travel flight hotel train ticket weather rain snow sun"
).split()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _text(rng: random.Random, words: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


# --------------------------------------------------------------------------- memory


def memory_trace(seed: int, agents: int, items: int, ops: int) -> tuple[dict[str, dict[str, str]], list[tuple[str, str, str]]]:
    """Values per agent, and a list of (agent, op, key-or-query); identical for every setup."""
    rng = random.Random(seed)
    values = {f"agent{a}": {f"item{i}": _text(rng) for i in range(items)} for a in range(agents)}
    hot = max(1, items // 5)
    trace = []
    for _ in range(ops):
        agent = f"agent{rng.randrange(agents)}"
        r = rng.random()
        if r < 0.6:  # the working set: task description, plan, recent turns (a fifth of the items)
            trace.append((agent, "get", f"item{rng.randrange(hot)}"))
        elif r < 0.9:  # a scan: one-off lookups across the whole memory
            trace.append((agent, "get", f"item{rng.randrange(items)}"))
        else:
            trace.append((agent, "search", " ".join(rng.sample(values[agent][f"item{rng.randrange(items)}"].split(), 6))))
    return values, trace


async def run_memory(setup: str, k: int, limit: int | None, values: dict[str, dict[str, str]], trace: list[tuple[str, str, str]], embedder: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        per_agent = limit if limit is not None else 1 << 40
        cfg = ManagersConfig.model_validate(
            {"memory": {"per_agent_limit": per_agent, "total_limit": 1 << 40, "k": k}, "storage": {"synchronous": "NORMAL"}}
        )
        m = build_managers(cfg, data_dir=tmp, plugin_tools={}, embedder=embedder)
        try:
            records = {name: AgentRecord(name=name) for name in values}
            for name, items in values.items():
                for key, value in items.items():
                    await m.memory.add(records[name], value, key=key)
            m.memory.stats.__init__()  # count the trace only, not the loading
            gets: list[float] = []
            searches: list[float] = []
            start = time.perf_counter()
            for agent, op, arg in trace:
                t = time.perf_counter()
                if op == "get":
                    item = await m.memory.get(records[agent], arg)
                    assert item.value == values[agent][arg]
                    gets.append(time.perf_counter() - t)
                else:
                    await m.memory.search(records[agent], arg, k=5)
                    searches.append(time.perf_counter() - t)
            elapsed = time.perf_counter() - start
            stats = m.memory.stats.as_dict()
            resident = m.memory.usage()["total_resident_bytes"]
        finally:
            await m.aclose()
    return {
        "setup": setup,
        "hit rate": stats["hit_rate"],
        "evictions": stats["evictions"],
        "resident KiB": resident / 1024,
        "get p50 ms": 1000 * _pct(gets, 0.5),
        "get p99 ms": 1000 * _pct(gets, 0.99),
        "search p50 ms": 1000 * _pct(searches, 0.5),
        "search p99 ms": 1000 * _pct(searches, 0.99),
        "ops/s": len(trace) / elapsed,
    }


# --------------------------------------------------------------------------- storage


async def run_storage(synchronous: str, embedder: Any, seed: int, files: int = 1000, writes: int = 200) -> dict[str, Any]:
    rng = random.Random(seed)
    alice = AgentRecord(name="alice")
    with tempfile.TemporaryDirectory() as tmp:
        m = build_managers({"storage": {"synchronous": synchronous}}, data_dir=tmp, plugin_tools={}, embedder=embedder)
        try:
            write_lat = []
            for i in range(writes):
                t = time.perf_counter()
                await m.storage.write(alice, f"docs/f{i % 50}.md", _text(rng, 500))
                write_lat.append(time.perf_counter() - t)
            for i in range(files - 50):
                await m.storage.store.write("alice", f"corpus/c{i}.md", _text(rng, 80))
            read_lat, search_lat = [], []
            for i in range(200):
                t = time.perf_counter()
                await m.storage.read(alice, f"docs/f{i % 50}.md", version=1 + (i % 4))
                read_lat.append(time.perf_counter() - t)
            for _ in range(100):
                t = time.perf_counter()
                await m.storage.search(alice, _text(rng, 8), k=5)
                search_lat.append(time.perf_counter() - t)
        finally:
            await m.aclose()
    return {
        "setup": f"synchronous={synchronous}",
        "write p50 ms": 1000 * _pct(write_lat, 0.5),
        "write p99 ms": 1000 * _pct(write_lat, 0.99),
        "writes/s": len(write_lat) / sum(write_lat),
        "read p50 ms": 1000 * _pct(read_lat, 0.5),
        "search p50 ms": 1000 * _pct(search_lat, 0.5),
        "search p99 ms": 1000 * _pct(search_lat, 0.99),
    }


# --------------------------------------------------------------------------- tools


async def run_tools(tool: str, parallel: bool, calls_per_turn: int, turns: int, embedder: Any) -> dict[str, Any]:
    tools = {t.name: t for t in managers_tools.bench_tools()}
    with tempfile.TemporaryDirectory() as tmp:
        m = build_managers({"tools": {"parallel": parallel}}, data_dir=tmp, plugin_tools=tools, embedder=embedder)
        alice = AgentRecord(name="alice")
        try:
            latencies = []
            start = time.perf_counter()
            for turn in range(turns):
                calls = [ToolCall(name=tool, arguments={"n": turn * calls_per_turn + i}) for i in range(calls_per_turn)]
                t = time.perf_counter()
                results = await m.tools.run_calls(alice, calls)
                latencies.append(time.perf_counter() - t)
                failed = [r for r in results if not r.ok]
                if failed:
                    raise RuntimeError(f"bench tool failed: {failed[0].error}")
            elapsed = time.perf_counter() - start
        finally:
            await m.aclose()
    total = calls_per_turn * turns
    return {
        "setup": f"{tool} / {'parallel' if parallel else 'one at a time'}",
        "calls": total,
        "calls/s": total / elapsed,
        "turn p50 ms": 1000 * statistics.median(latencies),
        "turn max ms": 1000 * max(latencies),
    }


# --------------------------------------------------------------------------- report


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "setup" else "right")
    for row in rows:
        table.add_row(*(_fmt(v) for v in row.values()))
    return table


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    embedder = make_embedder(EmbeddingConfig(kind=args.embedder))
    console = Console(width=max(150, Console().width))
    values, trace = memory_trace(args.seed, args.agents, args.items, args.ops)
    item_bytes = statistics.mean(len(v) + 8 for items in values.values() for v in items.values())
    limit = int(args.items * item_bytes * args.resident_share)
    memory_rows = [
        await run_memory("LRU-2 (default)", 2, limit, values, trace, embedder),
        await run_memory("LRU (K=1)", 1, limit, values, trace, embedder),
        await run_memory("no limit (all resident)", 2, None, values, trace, embedder),
    ]
    console.print(
        _table(
            f"memory: {args.agents} agents x {args.items} items (~{item_bytes:.0f} B), limit {args.resident_share:.0%} of each working set, "
            f"{args.ops} ops, embedder {embedder.name}",
            memory_rows,
        )
    )
    storage_rows = [await run_storage("FULL", embedder, args.seed), await run_storage("NORMAL", embedder, args.seed)]
    console.print(_table("storage: 200 versioned writes of ~3 KB, 200 reads of old versions, 100 searches over 1,000 files", storage_rows))
    tool_rows = []
    for tool, turns in (("io_wait", 8), ("sandboxed_compute", 3)):
        for parallel in (True, False):
            tool_rows.append(await run_tools(tool, parallel, args.calls, turns, embedder))
    console.print(_table(f"tools: turns of {args.calls} independent calls (io_wait: 50 ms each; sandboxed_compute: a subprocess each)", tool_rows))
    speedups = {
        tool: next(r["calls/s"] for r in tool_rows if r["setup"] == f"{tool} / parallel")
        / next(r["calls/s"] for r in tool_rows if r["setup"] == f"{tool} / one at a time")
        for tool in ("io_wait", "sandboxed_compute")
    }
    console.print("parallel speed-up: " + ", ".join(f"{t} {s:.1f}x" for t, s in speedups.items()))
    return {"memory": memory_rows, "storage": storage_rows, "tools": tool_rows, "speedups": speedups, "args": vars(args)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aios.bench.studies.managers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--items", type=int, default=300, help="memory items per agent")
    parser.add_argument("--ops", type=int, default=3000, help="memory operations in the trace")
    parser.add_argument("--resident-share", type=float, default=0.25, help="per-agent memory limit as a share of the working set")
    parser.add_argument("--calls", type=int, default=16, help="independent tool calls per turn")
    parser.add_argument("--embedder", choices=["hashing", "minilm", "auto"], default="hashing")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "managers.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"results: {args.out / 'managers.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
