"""``aios.patch("open-interpreter")``: Open-Interpreter 0.4's model calls and code execution through the kernel.

While patched:

- ``interpreter.llm.completions`` (the litellm call behind every ``chat``) is
  answered by the kernel, streaming (:mod:`.completions`); an interpreter
  whose ``llm.completions`` the user replaced with a function of their own
  keeps it;
- ``computer.run`` / ``computer.terminal.run`` run code as tool syscalls in the
  kernel's sandbox, after access control (:mod:`.execution`);
- OI's anonymous telemetry (a POST to posthog from every ``chat``) is off, and
  ``llm.load()`` does not contact an Ollama server for ``ollama/...`` models:
  nothing leaves the machine. (Patch before importing ``interpreter``: importing
  it makes litellm download its model cost map unless
  ``LITELLM_LOCAL_MODEL_COST_MAP`` is set, which patching does.)

Agent identity: the ``aios.agent_scope`` in force, else the interpreter's
``name`` attribute if it has one, else ``open-interpreter.OpenInterpreter.<n>``
(one agent per interpreter instance). Options: ``model``, ``max_tokens`` (upper
bound per call, default 1024), ``timeout``, ``priority``, ``group``, and
``tool_timeout`` (seconds a code block may run, within the tool's own limit).
"""

from __future__ import annotations

import functools
from typing import Any

from aios.adapters.shared.adapter import RoutedAdapter
from aios.adapters.shared.names import InstanceNames, safe_agent_name
from aios.adapters.shared.route import Route, RouteOptions

from aios_core.errors import AIOSError
from aios_core.identity import AgentIdentity, current_agent
from aios_core.patching import Patcher
from aios_core.port import KernelPort

FRAMEWORK = "open-interpreter"
SUPPORTED = ">=0.4,<0.5"


class Identities:
    """Which agent an interpreter instance is."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self._names = InstanceNames(FRAMEWORK)

    def __call__(self, interpreter: Any) -> AgentIdentity:
        if current_agent.get() is None:
            own = getattr(interpreter, "name", None)
            name = safe_agent_name(own, FRAMEWORK) if isinstance(own, str) and own else self._names.name_of(interpreter)
        else:
            name = ""  # the agent in scope is the caller
        return self.route.identity(name)


def _import_open_interpreter() -> Any:
    # OI means litellm to use its bundled model cost map (llm.py sets this variable), but an earlier
    # module of OI imports litellm first, which then downloads the map from GitHub: set it before
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        from interpreter.core import core
        from interpreter.core.computer.terminal.terminal import Terminal
        from interpreter.core.llm import llm
    except Exception as exc:  # OI imports many optional pieces; say which failed
        raise AIOSError(f"aios.patch('open-interpreter'): importing Open-Interpreter failed: {exc!r}") from exc
    return core, llm, Terminal


class OpenInterpreterAdapter(RoutedAdapter):
    name = FRAMEWORK
    distribution = "open-interpreter"
    supported = SUPPORTED
    description = "Open-Interpreter 0.4: completions answered by the kernel, code run in the kernel's sandbox after confirmation"

    def prepare(self, patcher: Patcher, kernel: KernelPort, options: RouteOptions) -> None:
        """Import Open-Interpreter (litellm kept offline) before the route exists, so a broken install fails first."""
        _import_open_interpreter()

    def install(self, patcher: Patcher, route: Route) -> None:
        core, llm_module, Terminal = _import_open_interpreter()  # imported by prepare: only looked up here
        from aios.adapters.open_interpreter.completions import Completions
        from aios.adapters.open_interpreter.execution import Execution

        identities = Identities(route)
        execution = Execution(route, identities)
        _route_completions(patcher, llm_module, Completions(route, identities, route.kernel_model))
        patcher.replace(Terminal, "run", _terminal_run(Terminal.run, execution))
        patcher.replace(llm_module.Llm, "load", _offline_load(llm_module.Llm.load))
        patcher.replace(core, "send_telemetry", _no_telemetry)


def _route_completions(patcher: Patcher, llm_module: Any, completions: Any) -> None:
    """Make ``Llm.completions`` a property: OI's default endpoint reads as the kernel's, a user's own stays.

    ``Llm.__init__`` stores ``fixed_litellm_completions`` on each instance, so
    existing and future interpreters are covered by intercepting the
    attribute on the class; the instances keep their stored value, which is
    what they see again after unpatching.
    """
    default = llm_module.fixed_litellm_completions

    def get(llm: Any) -> Any:
        value = llm.__dict__.get("completions", default)
        return functools.partial(completions, llm) if value is default else value

    def set_(llm: Any, value: Any) -> None:
        llm.__dict__["completions"] = value

    patcher.replace(llm_module.Llm, "completions", property(get, set_, doc="routed through the AIOS kernel"))


def _terminal_run(original: Any, execution: Any) -> Any:
    @functools.wraps(original, updated=())
    def run(self: Any, language: str, code: str, stream: bool = False, display: bool = False) -> Any:
        return execution.terminal_run(self, language, code, stream=stream, display=display)

    return run


def _offline_load(original: Any) -> Any:
    @functools.wraps(original, updated=())
    def load(self: Any) -> None:
        if not self._is_loaded and str(self.model).startswith("ollama/"):
            # the kernel serves the model: there is no Ollama server to list, pull from or ping
            self._is_loaded = True
            return
        original(self)

    return load


def _no_telemetry(event_name: str, properties: Any = None) -> None:
    """OI's ``send_telemetry`` while patched: nothing leaves the machine."""


#: one per process: it holds the patch state of Open-Interpreter's (process-wide) classes
ADAPTER = OpenInterpreterAdapter()
