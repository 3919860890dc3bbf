"""AutoGen tool execution as tool syscalls: ``run_json`` / ``run_json_stream`` under the kernel's tool manager.

``AssistantAgent`` runs tools through its workbench (``StaticWorkbench.call_tool``
/ ``call_tool_stream``), which calls ``tool.run_json``, or ``run_json_stream``
for stream tools (``AgentTool``, ``TeamTool``: agents and teams used as tools);
handoff tools are called with ``run_json`` directly. Routing both covers every
path. A stream tool's intermediate events reach the workbench as they are
produced, while the whole run counts as one tool call of the calling agent. A
refusal (schema-invalid arguments, access denied, timeout) raises inside the
workbench, which reports it to the model as an error result just as it
reports a failing tool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from aios.adapters.shared.class_tree import ClassTreePatch
from aios.adapters.shared.route import Route
from aios.adapters.shared.tool_routing import FrameworkTool, ToolRouter
from autogen_core.tools import BaseStreamTool, BaseTool

from aios_core.patching import Patcher

DEFAULT_TOOL_AGENT = "autogen.tools"


def describe(tool: Any) -> FrameworkTool:
    schema = tool.schema
    parameters = dict(schema.get("parameters") or {"type": "object", "properties": {}})
    parameters.setdefault("type", "object")
    return FrameworkTool(name=tool.name, description=tool.description or "", parameters=parameters)


def make_run_json(route: Route, tools: ToolRouter, original: Any) -> Any:
    async def run_json(self: BaseTool[Any, Any], args: Mapping[str, Any], cancellation_token: Any, call_id: str | None = None) -> Any:
        """AIOS: a tool syscall of the agent in scope; the tool itself runs on the caller's loop."""
        return await tools.acall(
            route.identity(DEFAULT_TOOL_AGENT),
            describe(self),
            dict(args),
            lambda: original(self, args, cancellation_token, call_id=call_id),
            owner=self,
            describe=self.return_value_as_string,
        )

    run_json.__aios_adapter__ = "autogen"  # type: ignore[attr-defined]
    run_json.__wrapped__ = original  # type: ignore[attr-defined]
    return run_json


def make_run_json_stream(route: Route, tools: ToolRouter, original: Any) -> Any:
    async def run_json_stream(
        self: BaseStreamTool[Any, Any, Any], args: Mapping[str, Any], cancellation_token: Any, call_id: str | None = None
    ) -> AsyncGenerator[Any, None]:
        """AIOS: one tool syscall for the whole stream; its items are passed on as the tool produces them."""
        items: asyncio.Queue[Any] = asyncio.Queue()

        async def run() -> Any:
            last = None
            async for item in original(self, args, cancellation_token, call_id=call_id):
                items.put_nowait(item)
                last = item
            return last

        call = asyncio.ensure_future(
            tools.acall(
                route.identity(DEFAULT_TOOL_AGENT),
                describe(self),
                dict(args),
                run,
                owner=self,
                describe=self.return_value_as_string,
            )
        )
        try:
            while True:
                next_item = asyncio.ensure_future(items.get())
                await asyncio.wait({next_item, call}, return_when=asyncio.FIRST_COMPLETED)
                if next_item.done():
                    yield next_item.result()
                    continue
                next_item.cancel()
                while not items.empty():
                    yield items.get_nowait()
                break
            call.result()  # a refusal or the tool's own exception
        finally:
            if not call.done():
                call.cancel()

    run_json_stream.__aios_adapter__ = "autogen"  # type: ignore[attr-defined]
    run_json_stream.__wrapped__ = original  # type: ignore[attr-defined]
    return run_json_stream


def install(patcher: Patcher, route: Route) -> None:
    tools = ToolRouter(route)
    def patch_class(cls: type) -> None:
        for name, make in (("run_json", make_run_json), ("run_json_stream", make_run_json_stream)):
            original = cls.__dict__.get(name)
            if original is not None and not getattr(original, "__isabstractmethod__", False):
                patcher.replace(cls, name, make(route, tools, original))

    ClassTreePatch(patcher, BaseTool, patch_class, include_root=True).apply()
