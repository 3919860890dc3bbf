"""AutoGen tool execution as tool syscalls: ``BaseTool.run_json`` under the kernel's tool manager.

``AssistantAgent`` runs tools through its workbench (``StaticWorkbench.call_tool``
/ ``call_tool_stream``), which calls ``tool.run_json``; handoff tools are
called with ``run_json`` directly. Routing ``run_json`` therefore covers every
path, and a refusal (schema-invalid arguments, access denied, timeout) raises
inside the workbench, which reports it to the model as an error result just
as it reports a failing tool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autogen_core.tools import BaseTool

from adapters.shared.class_tree import ClassTreePatch
from adapters.shared.route import Route
from adapters.shared.tool_routing import FrameworkTool
from aios_core.patching import Patcher

DEFAULT_TOOL_AGENT = "autogen.tools"


def describe(tool: Any) -> FrameworkTool:
    schema = tool.schema
    parameters = dict(schema.get("parameters") or {"type": "object", "properties": {}})
    parameters.setdefault("type", "object")
    return FrameworkTool(name=tool.name, description=tool.description or "", parameters=parameters)


def make_run_json(route: Route, original: Any) -> Any:
    async def run_json(self: BaseTool[Any, Any], args: Mapping[str, Any], cancellation_token: Any, call_id: str | None = None) -> Any:
        """AIOS: a tool syscall of the agent in scope; the tool itself runs on the caller's loop."""
        return await route.tools.acall(
            route.identity(DEFAULT_TOOL_AGENT),
            describe(self),
            dict(args),
            lambda: original(self, args, cancellation_token, call_id=call_id),
            describe=self.return_value_as_string,
        )

    run_json.__aios_adapter__ = "autogen"  # type: ignore[attr-defined]
    run_json.__wrapped__ = original  # type: ignore[attr-defined]
    return run_json


def install(patcher: Patcher, route: Route) -> None:
    def patch_class(cls: type) -> None:
        original = cls.__dict__.get("run_json")
        if original is not None and not getattr(original, "__isabstractmethod__", False):
            patcher.replace(cls, "run_json", make_run_json(route, original))

    ClassTreePatch(patcher, BaseTool, patch_class, include_root=True).apply()
