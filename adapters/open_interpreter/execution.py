"""Open-Interpreter's code execution (``computer.run`` / ``computer.terminal.run``) through the tool manager.

OI runs the model's code on the user's machine (a Jupyter kernel for Python,
a shell for shell code). Under AIOS each run is a tool syscall of the calling
interpreter's agent: Python goes to the kernel's ``python`` tool and shell
code to its ``shell`` tool, so the code runs in the subprocess sandbox (time
and memory limits, its own working directory) and, those tools being
``irreversible``, only after the access manager got a confirmation (the
kernel's ``confirm`` callback or an ``aios_confirm_action`` plugin; denied
when nobody answers). Every decision lands in the audit log.

The result returns to OI as console output, as OI's own languages return it,
so the model reads it and continues: stdout and stderr (a traceback if the
code raised), or why the code did not run (denied, timed out, killed).

Differences from OI's own execution, which follow from running sandboxed:
each code block runs in a fresh process (variables do not persist from one
block to the next), and languages other than Python and shell are refused
with a message instead of running unsandboxed on the host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aios_core.errors import AIOSError
from aios_core.identity import AgentIdentity
from aios_core.syscalls import ToolCall, ToolSyscall

if TYPE_CHECKING:
    from aios.adapters.shared.route import Route

    from aios_core.managers.tools import ToolResult

log = logging.getLogger(__name__)

#: OI language name -> the kernel tool that runs it, and the argument that carries the code
TOOLS: dict[str, tuple[str, str]] = {"python": ("python", "code"), "shell": ("shell", "command")}


def console(text: str) -> dict[str, Any]:
    return {"type": "console", "format": "output", "content": text}


def describe(result: ToolResult) -> str:
    """The console text OI shows the model for one tool result."""
    if not result.ok:
        if result.error_type == "access_denied":
            return f"AIOS did not allow this code to run: {result.error}"
        return f"AIOS could not run this code ({result.error_type}): {result.error}"
    report = result.output if isinstance(result.output, dict) else {"stdout": str(result.output)}
    text = (report.get("stdout") or "") + (report.get("stderr") or "")
    if report.get("error"):
        text += ("\n" if text and not text.endswith("\n") else "") + str(report["error"])
    return text


class Execution:
    """The kernel-routed ``Terminal.run`` of one patch."""

    def __init__(self, route: Route, identity: Callable[[Any], AgentIdentity]) -> None:
        self.route = route
        self.identity = identity

    def run_code(self, terminal: Any, language: str, code: str) -> list[dict[str, Any]]:
        """Run one block as a tool syscall; OI console messages (one output message)."""
        lang = terminal.get_language(language) if language else None
        key = lang.name.lower() if lang is not None else (language or "").lower()
        if key not in TOOLS:
            runnable = ", ".join(sorted(TOOLS))
            return [console(f"`{language}` code cannot run under AIOS: only {runnable} code runs, in the kernel's sandbox.")]
        tool, argument = TOOLS[key]
        arguments: dict[str, Any] = {argument: code, "timeout": self.route.options.tool_timeout}
        identity = self.identity(terminal.computer.interpreter)
        self.route.ensure_agent(identity)
        syscall = ToolSyscall(calls=[ToolCall(name=tool, arguments=arguments)], **self.route.syscall_fields(identity))
        try:
            results = self.route.kernel.call(syscall)
        except AIOSError as exc:
            log.warning("open-interpreter: running %s code for %s failed: %s", key, identity.name, exc.message)
            return [console(f"AIOS could not run this code ({exc.code}): {exc.message}")]
        return [console(describe(results[0]))]

    def terminal_run(self, terminal: Any, language: str, code: str, stream: bool = False, display: bool = False) -> Any:
        """``Terminal.run``'s contract: a list of messages, or a generator of them with ``stream=True``."""
        if stream:
            return self._streamed(terminal, language, code, display)
        return self._run(terminal, language, code, display)

    def _run(self, terminal: Any, language: str, code: str, display: bool) -> list[dict[str, Any]]:
        messages = self.run_code(terminal, language, code)
        if display:
            for m in messages:
                print(m["content"], end="")  # OI's own contract: display=True prints the output
        return messages

    def _streamed(self, terminal: Any, language: str, code: str, display: bool) -> Iterator[dict[str, Any]]:
        yield from self._run(terminal, language, code, display)
