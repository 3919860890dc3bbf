"""Running untrusted work in a subprocess with a time limit, a memory limit and bounded output.

Code execution never happens in the kernel process: a hung or memory-hungry
tool would take every agent down with it. Each run gets:

- its own session (process group), killed whole with SIGKILL at the deadline,
  so children a shell command left in the background die too;
- ``RLIMIT_AS`` (memory), ``RLIMIT_CPU`` (a backstop to the wall-clock
  deadline), ``RLIMIT_FSIZE`` and no core dumps, applied by
  :mod:`sandbox_child` before anything untrusted runs;
- a scrubbed environment (no kernel secrets), ``HOME`` and ``TMPDIR`` set to
  its own working directory;
- stdout and stderr kept up to ``max_output_bytes`` each, the rest drained and
  counted, so a chatty process cannot fill the kernel's memory.

This is resource isolation, not a security boundary against a determined
attacker: the process runs as the kernel's user and can reach the file system
and network. That is why the tools built on it are classed ``irreversible`` and
need confirmation (see :mod:`access`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aios_core.errors import ToolError
from aios_core.managers import sandbox_child

log = logging.getLogger(__name__)

CHILD = Path(sandbox_child.__file__).resolve()


class SandboxLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(default=30.0, gt=0, description="wall-clock seconds before the process group is killed")
    memory_mb: int = Field(default=512, ge=32, description="address-space limit (RLIMIT_AS) in MiB")
    max_output_bytes: int = Field(default=64 * 1024, ge=1024, description="bytes of stdout and of stderr kept")
    max_file_mb: int = Field(default=64, ge=1, description="largest file the process may write (RLIMIT_FSIZE)")
    open_files: int = Field(default=256, ge=16, description="file descriptors the process may hold")


@dataclass
class ProcessResult:
    returncode: int | None
    stdout: str
    stderr: str
    elapsed: float
    timed_out: bool = False
    memory_exceeded: bool = False
    #: the signal that ended the process, if one did
    signal: int | None = None
    stdout_truncated: int = 0
    stderr_truncated: int = 0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.memory_exceeded

    def describe_failure(self, limits: SandboxLimits) -> str:
        if self.timed_out:
            return f"timed out after {limits.timeout:g} s and was killed"
        if self.memory_exceeded:
            return f"exceeded its memory limit of {limits.memory_mb} MiB and was stopped"
        if self.signal is not None:
            name = signal.Signals(self.signal).name if self.signal in signal.Signals._value2member_map_ else str(self.signal)
            hint = " (the CPU-time limit)" if self.signal == signal.SIGXCPU else ""
            return f"was killed by {name}{hint}"
        return f"exited with status {self.returncode}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "returncode": self.returncode,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "elapsed": round(self.elapsed, 4),
            "timed_out": self.timed_out,
            "memory_exceeded": self.memory_exceeded,
            "signal": self.signal,
            "truncated": {"stdout": self.stdout_truncated, "stderr": self.stderr_truncated},
        }


def _environment(cwd: Path, extra: dict[str, str] | None) -> dict[str, str]:
    pythonpath = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(cwd),
        "TMPDIR": str(cwd),
        "PYTHONPATH": pythonpath,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env.update(extra or {})
    return env


async def _drain(stream: asyncio.StreamReader, keep: int) -> tuple[bytes, int]:
    kept = bytearray()
    dropped = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return bytes(kept), dropped
        room = keep - len(kept)
        if room > 0:
            kept += chunk[:room]
        dropped += max(0, len(chunk) - max(room, 0))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def run_child(payload: dict[str, Any], *, cwd: Path, limits: SandboxLimits, env: dict[str, str] | None = None) -> ProcessResult:
    """Start :mod:`sandbox_child` with ``payload`` in ``cwd`` under ``limits`` and wait for it (or kill it)."""
    payload = {
        **payload,
        "limits": {
            "memory_bytes": limits.memory_mb * 1024 * 1024,
            "cpu_seconds": int(limits.timeout) + 2,
            "file_bytes": limits.max_file_mb * 1024 * 1024,
            "open_files": limits.open_files,
        },
    }
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",
        "-X",
        "utf8",
        str(CHILD),
        cwd=str(cwd),
        env=_environment(cwd, env),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    readers = asyncio.gather(_drain(proc.stdout, limits.max_output_bytes), _drain(proc.stderr, limits.max_output_bytes))
    timed_out = False
    try:
        proc.stdin.write((json.dumps(payload) + "\n").encode())
        try:
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        proc.stdin.close()
        try:
            async with asyncio.timeout(limits.timeout):
                await proc.wait()
        except TimeoutError:
            timed_out = True
    finally:
        # the whole group: also what a shell left running in the background, and on cancellation
        _kill_group(proc.pid)
        if proc.returncode is None:
            await proc.wait()
    try:
        async with asyncio.timeout(5):
            (out, out_dropped), (err, err_dropped) = await readers
    except TimeoutError:  # a grandchild that escaped the group still holds the pipe: give up on the rest
        readers.cancel()
        out, out_dropped, err, err_dropped = b"", 0, b"(output unavailable: a process kept the pipe open)", 0
    rc = proc.returncode
    sig = -rc if rc is not None and rc < 0 and not timed_out else None
    stderr = err.decode("utf-8", "replace")
    memory = rc == sandbox_child.MEMORY_EXIT or (rc == 1 and stderr.rstrip().endswith("MemoryError"))
    return ProcessResult(
        returncode=rc,
        stdout=out.decode("utf-8", "replace"),
        stderr=stderr,
        elapsed=time.monotonic() - start,
        timed_out=timed_out,
        memory_exceeded=memory,
        signal=sig,
        stdout_truncated=out_dropped,
        stderr_truncated=err_dropped,
    )


class Workspace:
    """A fresh directory for one sandboxed run (``work``: the process's cwd) plus a private control folder."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, prefix: str = "run-") -> None:
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        self.base = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        self.work = self.base / "work"
        self.control = self.base / "control"
        self.work.mkdir()
        self.control.mkdir(mode=0o700)

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


async def run_python(code: str, *, workspace: Workspace, limits: SandboxLimits) -> ProcessResult:
    script = workspace.control / "main.py"
    script.write_text(code, encoding="utf-8")
    return await run_child({"mode": "script", "script": str(script)}, cwd=workspace.work, limits=limits)


async def run_shell(command: str, *, workspace: Workspace, limits: SandboxLimits) -> ProcessResult:
    shell = shutil.which("bash") or "/bin/sh"
    return await run_child({"mode": "exec", "argv": [shell, "-c", command]}, cwd=workspace.work, limits=limits)


def import_target(func: Callable[..., Any]) -> str:
    """``module:qualname`` of a module-level function, which is what a subprocess can import."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in qualname or "<lambda>" in qualname:
        raise ToolError(
            f"{func!r} cannot run sandboxed: a sandboxed tool must be a module-level function of an importable module",
            reason="not_importable",
        )
    return f"{module}:{qualname}"


async def call_sandboxed(
    func: Callable[..., Any], kwargs: dict[str, Any], *, limits: SandboxLimits, root: str | os.PathLike[str] | None = None
) -> Any:
    """Call ``func(**kwargs)`` in a subprocess; its JSON result, or a :class:`ToolError` saying what went wrong."""
    target = import_target(func)
    with Workspace(root, prefix="call-") as ws:
        result_path = ws.control / "result.json"
        proc = await run_child({"mode": "call", "target": target, "kwargs": kwargs, "result": str(result_path)}, cwd=ws.work, limits=limits)
        if not proc.ok or not result_path.exists():
            detail = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else []
            raise ToolError(
                f"{target} {proc.describe_failure(limits)}" + (f": {detail[0]}" if detail else ""),
                reason="timeout" if proc.timed_out else "memory" if proc.memory_exceeded else "crashed",
            )
        result = json.loads(result_path.read_text(encoding="utf-8"))
    if not result["ok"]:
        raise ToolError(f"{target} raised {result['error']}", reason="raised", error_type=result.get("error_type"))
    return result["output"]
