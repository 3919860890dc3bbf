"""The test side of a quickstart run: a syscall recorder, and the sim core with scripted code answers.

Installed into a quickstart's subprocess the way any third-party plugin is
(an entry point of the ``aios`` group, from a ``.dist-info`` on the path), so
the program itself runs unchanged while the test sees what the kernel
scheduled: which agent made each model and tool call, and what each model
call was shown (tool results included). Every finished syscall is appended to
the JSON-lines file ``$AIOS_QUICKSTART_RECORD``.

The ``scripted-sim`` core is the sim core, except that a request offering a
tool with a ``code`` argument (Open-Interpreter's ``execute``) is answered
with a call running ``$AIOS_QUICKSTART_CODE`` in Python: the sim's own
arguments are placeholder words, which no interpreter would run.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from aios_core.components import CoreFactory
from aios_core.cores.sim import SimCore, _pieces
from aios_core.hookspecs import hookimpl
from aios_core.syscalls import LLMRequest

_lock = threading.Lock()


def _message(m: Any) -> dict[str, Any]:
    return {
        "role": m.role,
        "content": m.content,
        "tool_call_id": m.tool_call_id,
        "tool_calls": [c.name for c in m.tool_calls or []],
    }


def _record(syscall: Any, error: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": syscall.kind,
        "agent": syscall.agent,
        "program": syscall.program,
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "queued": syscall.timing.queued is not None,
    }
    if syscall.kind == "llm":
        entry["messages"] = [_message(m) for m in syscall.request.messages]
        entry["tools"] = [t.name for t in syscall.request.tools]
    elif syscall.kind == "tool":
        entry["calls"] = [{"name": c.name, "arguments": c.arguments} for c in syscall.calls]
    return entry


@hookimpl
def aios_syscall_finished(syscall: Any, error: Any) -> None:
    path = os.environ.get("AIOS_QUICKSTART_RECORD")
    if not path:
        return
    line = json.dumps(_record(syscall, error), default=str)
    with _lock, open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


class ScriptedCodeSim(SimCore):
    """The sim core; a request offering a code-running tool (and not answering its result) gets a scripted Python call."""

    def _plan(self, request: LLMRequest) -> list[str]:
        code = os.environ.get("AIOS_QUICKSTART_CODE")
        runner = next((t for t in request.tools if "code" in (t.parameters.get("properties") or {})), None)
        if code and runner is not None and request.messages[-1].role != "tool":
            call = {"tool_calls": [{"name": runner.name, "arguments": {"language": "python", "code": code}}]}
            return _pieces(json.dumps(call))
        return super()._plan(request)


@hookimpl
def aios_register_cores() -> list[CoreFactory]:
    return [CoreFactory("scripted-sim", lambda name="scripted-sim", **options: ScriptedCodeSim(name=name, **options), "sim + scripted code calls")]
