"""Ending a server the benchmark started: politely first, then for sure, and closing its log."""

from __future__ import annotations

import subprocess
from typing import IO, Any


def end_process(proc: subprocess.Popen[Any] | None, log: IO[Any] | None, *, grace: float = 15.0) -> None:
    """SIGTERM, up to ``grace`` seconds to exit (a server drains its requests), then SIGKILL; the log is closed."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if log is not None:
        log.close()
