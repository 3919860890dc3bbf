"""Running untrusted work in a confined subprocess with a time limit, a memory limit and bounded output.

Code execution never happens in the kernel process: a hung or memory-hungry
tool would take every agent down with it. Each run gets:

- confinement (see :mod:`isolation`): by default bubblewrap namespaces, so the
  code sees only the Python runtime and its own working folder, has no network
  (unless its agent's group is listed in ``network_groups``), and dies with the
  call; or, if the operator named it, a plain process (the weaker mode);
- its own session (process group), killed whole with SIGKILL at the deadline;
- ``RLIMIT_AS`` (memory), ``RLIMIT_CPU`` (a backstop to the wall-clock
  deadline), ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``, ``RLIMIT_NPROC`` (processes,
  under bubblewrap, where it counts only the sandbox's own) and no core dumps,
  applied by :mod:`sandbox_child` before anything untrusted runs;
- a scrubbed environment (no kernel secrets), ``HOME`` and ``TMPDIR`` set to
  its own working directory;
- stdout and stderr kept up to ``max_output_bytes`` each, the rest drained and
  counted, so a chatty process cannot fill the kernel's memory.
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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aios_core.errors import ToolError
from aios_core.managers import sandbox_child
from aios_core.managers.isolation import (
    CHILD_PATH,
    CONTROL_DIR,
    WORK_DIR,
    BwrapPlan,
    Isolation,
    chown_tree,
    module_roots,
    python_runtime,
    require_bwrap,
)

log = logging.getLogger(__name__)

CHILD = Path(sandbox_child.__file__).resolve()


class SandboxLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(default=30.0, gt=0, description="wall-clock seconds before the process group is killed")
    memory_mb: int = Field(default=512, ge=32, description="address-space limit (RLIMIT_AS) in MiB")
    max_output_bytes: int = Field(default=64 * 1024, ge=1024, description="bytes of stdout and of stderr kept")
    max_file_mb: int = Field(default=64, ge=1, description="largest file the process may write (RLIMIT_FSIZE)")
    open_files: int = Field(default=256, ge=16, description="file descriptors the process may hold")
    processes: int = Field(default=64, ge=4, description="processes and threads the sandbox may run at once (RLIMIT_NPROC, bwrap only)")


@dataclass(frozen=True)
class Confinement:
    """How one run is confined: the isolation mode, and whether it shares the host's network (bwrap only)."""

    isolation: Isolation = Isolation.BWRAP
    network: bool = False


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


def _environment(home: str, pythonpath: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
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


def _limits_payload(limits: SandboxLimits, confinement: Confinement) -> dict[str, int | None]:
    return {
        "memory_bytes": limits.memory_mb * 1024 * 1024,
        "cpu_seconds": int(limits.timeout) + 2,
        "file_bytes": limits.max_file_mb * 1024 * 1024,
        "open_files": limits.open_files,
        # outside a user namespace RLIMIT_NPROC counts every process of the kernel's user: only set it in a sandbox
        "processes": limits.processes if confinement.isolation is Isolation.BWRAP else None,
    }


async def run_child(
    payload: dict[str, Any],
    *,
    workspace: "Workspace",
    limits: SandboxLimits,
    confinement: Confinement | None = None,
    env: dict[str, str] | None = None,
    import_target: str | None = None,
) -> ProcessResult:
    """Start :mod:`sandbox_child` with ``payload`` in ``workspace`` under ``limits`` and wait for it (or kill it).

    Paths in ``payload`` (``script``, ``result``) are relative to the workspace's control folder.
    ``import_target`` names the module a ``call`` job imports, so a sandbox can mount just its package.
    """
    confinement = confinement or Confinement()
    payload = {**payload, "limits": _limits_payload(limits, confinement)}
    start = time.monotonic()
    common = dict(stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    interpreter = [sys.executable, "-P", "-X", "utf8"]
    launch = None
    with ExitStack() as stack:
        if confinement.isolation is Isolation.BWRAP:
            binary = require_bwrap()
            binds, path_entries = module_roots(import_target) if import_target else ((), ())
            plan = BwrapPlan(
                binary=binary,
                binds=python_runtime() + binds,
                work=workspace.work,
                control=workspace.control,
                control_writable=payload.get("mode") == "call",
                child=CHILD,
                network=confinement.network,
                tmp_bytes=limits.max_file_mb * 1024 * 1024,
            )
            chown_tree(workspace.work, plan.drop_to)
            chown_tree(workspace.control, plan.drop_to)
            payload.update(control=CONTROL_DIR, drop_to=plan.drop_to)
            launch = stack.enter_context(plan.command([*interpreter, CHILD_PATH]))
            environment = _environment(WORK_DIR, os.pathsep.join(map(str, path_entries)), env)
            proc = await asyncio.create_subprocess_exec(*launch.argv, env=environment, pass_fds=launch.pass_fds, **common)
            launch.started()
        else:
            payload.update(control=str(workspace.control))
            pythonpath = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
            proc = await asyncio.create_subprocess_exec(
                *interpreter, str(CHILD), cwd=str(workspace.work), env=_environment(str(workspace.work), pythonpath, env), **common
            )
        return await _supervise(proc, payload, limits, start, launch)
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns


async def _supervise(proc: asyncio.subprocess.Process, payload: dict[str, Any], limits: SandboxLimits, start: float, launch: Any) -> ProcessResult:
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    readers = asyncio.gather(_drain(proc.stdout, limits.max_output_bytes), _drain(proc.stderr, limits.max_output_bytes))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(limits.timeout):
                if launch is not None:
                    try:
                        await asyncio.to_thread(launch.attach)
                    except OSError as exc:  # bwrap died first: its stderr says why
                        log.debug("sandbox start-up: %s", exc)
                proc.stdin.write((json.dumps(payload) + "\n").encode())
                try:
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                proc.stdin.close()
                await proc.wait()
        except TimeoutError:
            timed_out = True
    finally:
        # the whole group: also what a shell left running in the background, and on cancellation;
        # under bubblewrap the sandbox's init is killed and awaited: its death takes its PID namespace along
        _kill_group(proc.pid)
        if proc.returncode is None:
            await proc.wait()
        if launch is not None:
            await launch.reap()
    try:
        async with asyncio.timeout(5):
            (out, out_dropped), (err, err_dropped) = await readers
    except TimeoutError:  # a grandchild that escaped the group still holds the pipe: give up on the rest
        readers.cancel()
        out, out_dropped, err, err_dropped = b"", 0, b"(output unavailable: a process kept the pipe open)", 0
    rc = proc.returncode
    if launch is not None and rc is not None and rc > 128 and (rc - 128) in signal.Signals._value2member_map_:
        rc = -(rc - 128)  # bwrap reports a child killed by signal N as 128 + N
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


async def run_python(code: str, *, workspace: Workspace, limits: SandboxLimits, confinement: Confinement | None = None) -> ProcessResult:
    (workspace.control / "main.py").write_text(code, encoding="utf-8")
    return await run_child({"mode": "script", "script": "main.py"}, workspace=workspace, limits=limits, confinement=confinement)


async def run_shell(command: str, *, workspace: Workspace, limits: SandboxLimits, confinement: Confinement | None = None) -> ProcessResult:
    shell = shutil.which("bash") or "/bin/sh"
    return await run_child({"mode": "exec", "argv": [shell, "-c", command]}, workspace=workspace, limits=limits, confinement=confinement)


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
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    limits: SandboxLimits,
    root: str | os.PathLike[str] | None = None,
    confinement: Confinement | None = None,
) -> Any:
    """Call ``func(**kwargs)`` in a confined subprocess; its JSON result, or a :class:`ToolError` saying what went wrong."""
    target = import_target(func)
    with Workspace(root, prefix="call-") as ws:
        result_path = ws.control / "result.json"
        proc = await run_child(
            {"mode": "call", "target": target, "kwargs": kwargs, "result": "result.json"},
            workspace=ws, limits=limits, confinement=confinement, import_target=target.partition(":")[0],
        )
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
