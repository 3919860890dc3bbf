"""Kernel overhead: what a syscall costs on top of calling the core directly.

    python -m aios.bench.studies.overhead [--calls 3000] [--rounds 5]

The same one-token generation on a zero-cost sim core is timed (a) straight on
the core, (b) through ``kernel.acall`` with a pre-built syscall, and (c) through
the SDK (``agent.achat``: building and validating the syscall included), on
the kernel's own loop, one call at a time. Rounds alternate the three so that
machine noise hits them alike; medians of per-call latencies are reported,
and the overhead is the difference of medians. Cross-thread calls (a sync
caller in another thread) are measured too, as (d).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from aios_core import bridge
from aios_core.cores.base import Generation
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.syscalls import LLMRequest, LLMSyscall

REQUEST = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1, "extra": {"sim_tokens": 1}}


async def _direct(core: SimCore, n: int) -> list[float]:
    request = LLMRequest.model_validate(REQUEST)
    out = []
    for i in range(n):
        t = time.perf_counter()
        async for chunk in core.generate(Generation(id=f"d{i}-{t}", request=request)):
            if chunk.finish_reason:
                break
        out.append(time.perf_counter() - t)
    return out


async def _kernel(kernel: Kernel, n: int) -> list[float]:
    request = LLMRequest.model_validate(REQUEST)
    out = []
    for _ in range(n):
        sc = LLMSyscall(agent="bench", request=request)
        t = time.perf_counter()
        await kernel.acall(sc)
        out.append(time.perf_counter() - t)
    return out


async def _sdk(kernel: Kernel, n: int) -> list[float]:
    agent = kernel.agent("bench")
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await agent.achat("ping", max_tokens=1, extra={"sim_tokens": 1})
        out.append(time.perf_counter() - t)
    return out


def _threaded(kernel: Kernel, n: int) -> list[float]:
    agent = kernel.agent("bench-thread")
    out = []
    for _ in range(n):
        t = time.perf_counter()
        agent.chat("ping", max_tokens=1, extra={"sim_tokens": 1})
        out.append(time.perf_counter() - t)
    return out


def measure(calls: int, rounds: int) -> dict[str, Any]:
    core = SimCore(t0=0.0, a=0.0, b=0.0, restore_cost=0.0)
    kernel = Kernel(cores=[core], scheduler="plas", entry_point_plugins=False).start()
    kernel.register_agent("bench")
    loop = kernel.loop
    samples: dict[str, list[float]] = {"direct": [], "kernel": [], "sdk": [], "thread": []}
    try:
        bridge.run_sync(loop, _direct(core, 200))  # warm up
        bridge.run_sync(loop, _kernel(kernel, 200))
        for r in range(rounds):
            order = ["direct", "kernel", "sdk"] if r % 2 == 0 else ["sdk", "kernel", "direct"]
            for name in order:
                if name == "direct":
                    samples[name] += bridge.run_sync(loop, _direct(core, calls))
                elif name == "kernel":
                    samples[name] += bridge.run_sync(loop, _kernel(kernel, calls))
                else:
                    samples[name] += bridge.run_sync(loop, _sdk(kernel, calls))
            result: list[list[float]] = []
            t = threading.Thread(target=lambda: result.append(_threaded(kernel, calls // 5)))
            t.start()
            t.join()
            samples["thread"] += result[0]
    finally:
        kernel.stop()
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "calls_per_setup": {k: len(v) for k, v in samples.items()},
        "median_us": {k: 1e6 * v for k, v in med.items()},
        "overhead_us": {
            "kernel_vs_direct": 1e6 * (med["kernel"] - med["direct"]),
            "sdk_vs_direct": 1e6 * (med["sdk"] - med["direct"]),
            "sync_thread_vs_direct": 1e6 * (med["thread"] - med["direct"]),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aios.bench.studies.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per setup per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    load = [round(x, 2) for x in os.getloadavg()]
    result = measure(args.calls, args.rounds)
    table = Table(title="Kernel overhead per syscall (one-token generations on a zero-cost sim core; medians)")
    table.add_column("path")
    table.add_column("median latency µs", justify="right")
    table.add_column("added vs direct µs", justify="right")
    labels = {
        "direct": "(a) core.generate directly",
        "kernel": "(b) kernel.acall, pre-built syscall",
        "sdk": "(c) agent.achat (builds + validates)",
        "thread": "(d) agent.chat from another thread",
    }
    base = result["median_us"]["direct"]
    for key, label in labels.items():
        value = result["median_us"][key]
        table.add_row(label, f"{value:.1f}", "-" if key == "direct" else f"{value - base:.1f}")
    Console(width=100).print(table)
    print(f"samples: {result['calls_per_setup']}")
    if args.out is not None:
        result["load_average_at_start"] = load
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
