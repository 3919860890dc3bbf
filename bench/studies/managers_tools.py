"""Tools used by ``python -m aios.bench.studies.managers`` (module-level, so the sandbox subprocess can import them)."""

from __future__ import annotations

import asyncio

from aios_core.tool import Tool

_N = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


async def io_wait(n: int) -> int:
    """Stands for an I/O-bound tool (a web API, a database): 50 ms of waiting."""
    await asyncio.sleep(0.05)
    return n


def sandboxed_compute(n: int) -> int:
    """A small CPU job in its own subprocess (what code execution costs)."""
    return sum(i * i for i in range(200_000 + n))


def bench_tools() -> list[Tool]:
    return [
        Tool("io_wait", "waits 50 ms", _N, io_wait, max_concurrency=64),
        Tool("sandboxed_compute", "sums squares in a subprocess", _N, sandboxed_compute, sandboxed=True, max_concurrency=4, timeout=60),
    ]
