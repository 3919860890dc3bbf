"""Asking the person at the terminal before an agent does something irreversible.

``aios serve`` and ``aios run`` install :class:`TerminalConfirm` as the
kernel's confirmation callback when they run in an interactive terminal: an
agent that wants to run code, use the shell or purge a file's history is held
until someone types ``y``. Anything else, or no answer within ``timeout``
seconds, is a refusal (the access manager denies by default and audits the
decision either way).

The access manager calls sync callbacks in a worker thread. Questions are
asked one at a time (a lock), and the answer is read with ``select`` and a
deadline rather than ``input()``: a worker blocked forever in ``input()`` would
keep reading the terminal after its question was given up, and swallow the
answer meant for the next one.
"""

from __future__ import annotations

import json
import os
import select
import sys
import threading
import time
from typing import IO, Any

from rich.console import Console
from rich.markup import escape


class TerminalConfirm:
    """A confirmation callback (``confirm(agent, action, detail) -> bool | None``) that asks on a terminal."""

    def __init__(self, *, timeout: float = 55.0, stream: IO[str] | None = None, console: Console | None = None) -> None:
        self.timeout = timeout
        self.stream = stream if stream is not None else sys.stdin
        self.console = console or Console(stderr=True)
        self._lock = threading.Lock()

    def __call__(self, agent: str, action: str, detail: dict[str, Any]) -> bool | None:
        with self._lock:
            self._drain()
            resource = detail.get("resource", "")
            shown = {k: v for k, v in detail.items() if k not in ("resource", "group")}
            text = json.dumps(shown, ensure_ascii=False, default=repr)
            if len(text) > 600:
                text = text[:600] + "..."
            self.console.print(
                f"[bold yellow]confirm[/bold yellow] agent [bold]{escape(agent)}[/bold] (group {escape(str(detail.get('group', '?')))}) "
                f"wants [bold]{escape(action)}[/bold] on [bold]{escape(str(resource))}[/bold]\n  {escape(text)}\n"
                f"  allow? [y/N] (no answer in {self.timeout:.0f} s: no) ",
                end="",
            )
            line = self._read_line(self.timeout)
            if line is None:
                self.console.print("\n  [red]no answer: denied[/red]")
                return None
            allowed = line.strip().lower() in ("y", "yes")
            self.console.print("  [green]allowed[/green]" if allowed else "  [red]denied[/red]")
            return allowed

    def _read_line(self, timeout: float) -> str | None:
        """One line from the stream, or None after ``timeout`` seconds or at end of input."""
        deadline = time.monotonic() + timeout
        fd = self.stream.fileno()
        chunks: list[bytes] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            data = os.read(fd, 1024)
            if not data:
                return None
            chunks.append(data)
            if b"\n" in data:
                return b"".join(chunks).split(b"\n", 1)[0].decode("utf-8", errors="replace")

    def _drain(self) -> None:
        """Drop whatever was typed before the question was asked (it was not an answer to it)."""
        fd = self.stream.fileno()
        while select.select([fd], [], [], 0)[0]:
            if not os.read(fd, 1024):
                return


def terminal_confirm_if_interactive(timeout: float = 55.0) -> TerminalConfirm | None:
    """A :class:`TerminalConfirm` when stdin and stderr are a terminal, else None (nobody to ask: deny by default)."""
    try:
        interactive = sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        interactive = False
    return TerminalConfirm(timeout=timeout) if interactive else None
