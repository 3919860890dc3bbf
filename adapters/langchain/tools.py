"""LangChain tool invocation as tool syscalls: ``BaseTool.run`` / ``arun`` under the kernel's tool manager.

``invoke``/``ainvoke`` (and LangGraph's ``ToolNode``) call ``run``/``arun``.
The replacement sends the model-visible arguments (injected ones such as
LangGraph state stay out) to the tool manager, which validates them against
the tool's schema, checks access and starts the timeout; then LangChain's own
``run`` executes with the original input, so callbacks, ``handle_tool_error``,
``ToolMessage`` results and artifacts are exactly LangChain's.

Refusals: schema-invalid arguments raise a pydantic ``ValidationError`` (what
LangChain raises for bad arguments, so LangGraph's ``ToolNode`` reports them
to the model as it always does) caused by a :class:`KernelToolError`;
other refusals raise :class:`KernelToolError` (an AIOS ``ToolError`` and a
LangChain ``ToolException``) or :class:`~aios_core.errors.AccessDeniedError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aios.adapters.langchain import call_owners
from aios.adapters.langchain.calls import hint_from, identity_for
from aios.adapters.shared.route import Route
from aios.adapters.shared.tool_routing import FrameworkTool, ToolRouter, default_error
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic_core import PydanticCustomError, ValidationError

from aios_core.errors import AccessDeniedError, ToolError
from aios_core.identity import AgentIdentity, current_agent
from aios_core.patching import Patcher

DEFAULT_TOOL_AGENT = "langchain.tools"
#: run() keywords LangChain fills in itself; never arguments of the tool
_FILTERED = frozenset({"callbacks", "run_manager", "config"})
_INVALID_PREFIX = re.compile(r"^invalid arguments for [^:]+: ")
_PATH = re.compile(r"^[A-Za-z0-9_$/.\-\[\]]+$")


class KernelToolError(ToolError, ToolException):
    """The kernel's tool manager refused or abandoned a LangChain tool call (timeout, disabled tool, ...)."""


def describe(tool: BaseTool) -> FrameworkTool:
    fn = convert_to_openai_tool(tool)["function"]
    parameters = dict(fn.get("parameters") or {"type": "object", "properties": {}})
    parameters.setdefault("type", "object")
    return FrameworkTool(name=tool.name, description=fn.get("description") or "", parameters=parameters)


def visible_arguments(tool: BaseTool, spec: FrameworkTool, tool_input: Any) -> dict[str, Any]:
    """The arguments the model gave: a string input maps to the first parameter (as LangChain does); injected keys are dropped."""
    properties = spec.parameters.get("properties") or {}
    if isinstance(tool_input, str):
        return {next(iter(properties)): tool_input} if properties else {}
    if not isinstance(tool_input, dict):
        return {"input": tool_input}
    try:
        full = set(tool.args)
    except Exception:  # noqa: BLE001 - a tool without a resolvable schema: keep everything but run() plumbing
        full = set()
    injected = (full - set(properties)) | _FILTERED
    return {k: v for k, v in tool_input.items() if k not in injected}


def _validation_error(tool: str, message: str, arguments: dict[str, Any]) -> ValidationError:
    """A pydantic ValidationError carrying the tool manager's reasons, one line error per reason."""
    details = []
    for part in _INVALID_PREFIX.sub("", message).split("; "):
        where, sep, reason = part.partition(": ")
        if sep and _PATH.match(where):
            loc: tuple[str, ...] = tuple(where.split("/"))
        else:
            loc, reason = ("arguments",), part
        details.append({"type": PydanticCustomError("aios_invalid_arguments", "{reason}", {"reason": reason}), "loc": loc, "input": arguments})
    return ValidationError.from_exception_data(tool, details)  # type: ignore[arg-type]


def _error_factory(arguments: dict[str, Any]) -> Any:
    def refusal(error_type: str, message: str, tool: str) -> BaseException:
        if error_type == AccessDeniedError.code:
            return default_error(error_type, message, tool)
        error = KernelToolError(message, tool=tool, error_type=error_type)
        if _INVALID_PREFIX.match(message):
            invalid = _validation_error(tool, message, arguments)
            invalid.__cause__ = error
            return invalid
        return error

    return refusal


def _content(value: Any) -> str:
    if isinstance(value, ToolMessage):
        return value.content if isinstance(value.content, str) else str(value.content)
    return value if isinstance(value, str) else str(value)


def _identity(route: Route, tool: BaseTool, kwargs: dict[str, Any]) -> AgentIdentity:
    config = kwargs.get("config") or {}
    metadata = {**(config.get("metadata") or {}), **(kwargs.get("metadata") or {})}
    hint = hint_from(metadata, None)
    owner = call_owners.owner_of(kwargs.get("tool_call_id"))  # a call a kernel-served model asked for: its agent's
    if hint is None and owner is not None and current_agent.get() is None:
        return owner
    return identity_for(route, tool, hint, default=DEFAULT_TOOL_AGENT)


def make_run(route: Route, tools: ToolRouter, original: Any) -> Any:
    def run(self: BaseTool, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        """AIOS: a tool syscall; LangChain's run executes once the tool manager admits the call."""
        return _route_call(tools.call, route, original, self, tool_input, args, kwargs)

    return _mark(run, original)


def make_arun(route: Route, tools: ToolRouter, original: Any) -> Any:
    async def arun(self: BaseTool, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        """AIOS: a tool syscall; LangChain's arun executes on the caller's loop once the tool manager admits the call."""
        return await _route_call(tools.acall, route, original, self, tool_input, args, kwargs)

    return _mark(arun, original)


def _route_call(send: Callable[..., Any], route: Route, original: Any, tool: BaseTool, tool_input: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Hand one run of ``tool`` to the tool router through ``send`` (``call``, or ``acall`` whose awaitable is returned).

    The arguments the tool manager sees and checks are the ones the model
    gave (``visible_arguments``); the run itself is LangChain's own
    ``original``, with everything it was called with.
    """
    spec = describe(tool)
    arguments = visible_arguments(tool, spec, tool_input)
    return send(
        _identity(route, tool, kwargs),
        spec,
        arguments,
        lambda: original(tool, tool_input, *args, **kwargs),
        owner=tool,
        describe=_content,
        error=_error_factory(arguments),
    )


def _mark(wrapper: Any, original: Any) -> Any:
    wrapper.__name__ = original.__name__
    wrapper.__qualname__ = original.__qualname__
    wrapper.__wrapped__ = original
    wrapper.__aios_adapter__ = "langchain"
    return wrapper


def install(patcher: Patcher, route: Route) -> None:
    tools = ToolRouter(route)
    patcher.replace(BaseTool, "run", make_run(route, tools, BaseTool.__dict__["run"]))
    patcher.replace(BaseTool, "arun", make_arun(route, tools, BaseTool.__dict__["arun"]))
