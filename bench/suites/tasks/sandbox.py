"""Running code for episodes and checkers in the tool manager's subprocess sandbox, without a kernel.

Generated code never runs in the benchmark's (or the kernel's) process: each
run is a fresh subprocess with a wall-clock deadline, a memory limit and
bounded output (:mod:`aios_core.managers.sandbox`). This is the sandbox the
"without AIOS" side uses for an agent's tools, and the one every checker
uses to score, whatever the setup.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aios.bench.suites.tasks.base import ExecResult

from aios_core.managers.sandbox import ProcessResult, SandboxLimits, Workspace, run_python, run_shell
from aios_core.managers.sandbox_paths import resolve_in


def stage(root: Path, files: dict[str, str]) -> None:
    """Write ``files`` (relative path -> text) under ``root``; a path escaping ``root`` is refused."""
    for rel, text in files.items():
        target = resolve_in(root, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _result(proc: ProcessResult, limits: SandboxLimits, what: str) -> ExecResult:
    abnormal = proc.timed_out or proc.memory_exceeded or proc.signal is not None
    return ExecResult(
        ok=proc.ok, stdout=proc.stdout, stderr=proc.stderr, timed_out=proc.timed_out,
        error=f"{what} {proc.describe_failure(limits)}" if abnormal else None, returncode=proc.returncode,
    )


class LocalToolBox:
    """Sandboxed subprocesses, at most ``parallel`` at a time."""

    def __init__(self, *, parallel: int = 2, memory_mb: int = 1024, root: Path | None = None) -> None:
        self._slots = asyncio.Semaphore(parallel)
        self.memory_mb = memory_mb
        self.root = root

    async def run_python(self, code: str, *, timeout: float) -> ExecResult:
        limits = SandboxLimits(timeout=timeout, memory_mb=self.memory_mb)
        async with self._slots:
            with Workspace(self.root, prefix="bench-py-") as ws:
                proc = await run_python(code, workspace=ws, limits=limits)
        return _result(proc, limits, "the code")

    async def run_shell(self, command: str, *, files: dict[str, str], timeout: float) -> ExecResult:
        limits = SandboxLimits(timeout=timeout, memory_mb=self.memory_mb)
        async with self._slots:
            with Workspace(self.root, prefix="bench-sh-") as ws:
                stage(ws.work, files)
                proc = await run_shell(command, workspace=ws, limits=limits)
        return _result(proc, limits, "the command")
