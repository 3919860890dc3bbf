"""The tool manager: a registry of plugin tools, and safe, parallel execution of an LLM turn's calls.

A tool syscall carries every call one model turn asked for. They are
independent by construction (the model issued them together), so they run
concurrently; each call is checked and contained on its own and yields one
:class:`ToolResult`, so a failing call never loses its siblings' results.

Per call, in order: the tool must exist and be enabled; the arguments must
validate against its JSON schema (before anything runs); the access manager
must allow ``tool`` on its name (``irreversible`` tools need a confirmation);
then it runs under the tool's concurrency limit and timeout. Async callables
run on the loop and are cancelled at the deadline; sync callables run in a
bounded thread pool (a thread cannot be killed, so a sync tool that may hang
should be ``sandboxed``); ``sandboxed`` tools run in a subprocess with time and
memory limits (see :mod:`sandbox`) and are killed at the deadline.

Code tools and ``sandboxed`` tools are confined as ``isolation`` says (see
:mod:`isolation`): under bubblewrap by default, refused if it cannot start,
and as a plain process only when the operator names that weaker mode.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field

from aios_core.errors import AccessDeniedError, AIOSError, ToolError
from aios_core.managers.isolation import Isolation, probe
from aios_core.managers.sandbox import Confinement, SandboxLimits, call_sandboxed
from aios_core.plugins import PluginFailure
from aios_core.syscalls import TOOL_NAME_PATTERN, ClientTool, ToolCall, ToolSpec
from aios_core.tool import Tool

if TYPE_CHECKING:
    from aios_core.managers.access import AccessManager, AgentLike
    from aios_core.managers.storage import StorageManager
    from aios_core.syscalls import ToolSyscall

log = logging.getLogger(__name__)

_NAME = re.compile(TOOL_NAME_PATTERN)
#: tags that keep a tool off unless the matching switch of :class:`ToolConfig` is on
SHELL_TAG = "shell"
NETWORK_TAG = "network"


class ToolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: list[str] | None = Field(default=None, description="tools offered (None: every tool that is on by default)")
    disabled: list[str] = Field(default_factory=list, description="tools never offered")
    shell_enabled: bool = Field(default=False, description="allow tools tagged 'shell' (the shell tool)")
    web_enabled: bool = Field(default=False, description="allow tools tagged 'network' (web fetch)")
    default_timeout: float | None = Field(default=None, gt=0, description="timeout for every tool, replacing each tool's own")
    max_timeout: float = Field(default=600.0, gt=0, description="no tool call may run longer than this")
    concurrency: dict[str, int] = Field(default_factory=dict, description="per-tool concurrency limits replacing the tools' own")
    parallel: bool = Field(default=True, description="run the calls of one syscall concurrently (False: one at a time)")
    thread_workers: int = Field(default=8, ge=1, le=256, description="threads for synchronous tool callables")
    max_output_bytes: int = Field(default=256 * 1024, ge=1024, description="JSON size of a result beyond which it is truncated")
    python_memory_mb: int = Field(default=512, ge=64, description="memory limit of code-execution tools")
    sandbox_dir: str = Field(default="sandbox", description="workspaces of sandboxed runs, relative to the data directory")
    isolation: Isolation = Field(
        default=Isolation.BWRAP,
        description="how code tools are confined: 'bwrap' (namespaces; code tools refused if bubblewrap cannot start) "
        "or 'process' (a plain subprocess as the kernel's user, seeing its files and network: the weaker mode, by name only)",
    )
    network_groups: list[str] = Field(
        default_factory=list, description="access groups whose code tools share the host's network (bwrap; others have none)"
    )
    max_processes: int = Field(default=64, ge=4, description="processes and threads one code-tool run may have at once (bwrap)")


def isolation_status(config: ToolConfig) -> str:
    """One line for the startup log and ``aios config``: the configured mode and whether it can run here."""
    if config.isolation is Isolation.PROCESS:
        return "isolation=process: code tools run as plain processes with the kernel's user, files and network (the weaker mode, named in the config)"
    found = probe()
    if found.available:
        return f"isolation=bwrap: code tools run in bubblewrap namespaces ({found.binary})"
    return f"isolation=bwrap unavailable: code tools are refused ({found.detail}); set [managers.tools] isolation = \"process\" to accept the weaker mode"


class ToolResult(BaseModel):
    """The outcome of one call: ``output`` when ``ok``, else ``error`` (and its ``error_type``)."""

    model_config = ConfigDict(extra="forbid")

    call_id: str
    name: str
    ok: bool
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    elapsed: float = 0.0

    def as_message_content(self) -> str:
        """The text to put in the ``tool`` message answering this call."""
        if self.ok:
            return self.output if isinstance(self.output, str) else json.dumps(self.output, ensure_ascii=False, default=str)
        return f"error ({self.error_type}): {self.error}"


@dataclass
class ToolContext:
    """What a ``wants_context`` tool receives as ``_ctx``: who calls, and the kernel services it may use."""

    agent: "AgentLike"
    call_id: str
    storage: "StorageManager | None"
    limits: SandboxLimits
    sandbox_dir: Path | None
    config: ToolConfig
    extra: dict[str, Any] = field(default_factory=dict)
    #: how code this call runs is confined (the isolation mode and, per the agent's group, the network)
    confinement: Confinement = field(default_factory=Confinement)


@dataclass
class _Registered:
    tool: Tool
    validator: jsonschema.Draft202012Validator
    semaphore: asyncio.Semaphore
    timeout: float


class ToolManager:
    def __init__(
        self,
        config: ToolConfig | None = None,
        *,
        tools: dict[str, Tool] | list[Tool] | None = None,
        access: "AccessManager",
        storage: "StorageManager | None" = None,
        data_dir: str | Path | None = None,
    ) -> None:
        self.config = config or ToolConfig()
        self.access = access
        self.storage = storage
        self.sandbox_dir = None if data_dir is None else Path(data_dir) / self.config.sandbox_dir
        log.info("tools: %s", isolation_status(self.config))
        self.errors: list[PluginFailure] = []
        self._tools: dict[str, _Registered] = {}
        self._threads = ThreadPoolExecutor(max_workers=self.config.thread_workers, thread_name_prefix="aios-tool")
        self.stats = {"calls": 0, "failed": 0, "timeouts": 0, "denied": 0, "invalid": 0, "client_calls": 0}
        #: schema validators of tools declared by callers (ClientTool), by name
        self._client_validators: dict[str, Any] = {}
        items = tools.values() if isinstance(tools, dict) else (tools or [])
        for tool in items:
            try:
                self.register(tool)
            except ToolError as exc:
                # a broken plugin tool costs only itself
                log.warning("%s", exc.message)
                self.errors.append(PluginFailure(getattr(tool, "name", "?"), exc.message))

    # ------------------------------------------------------------------ registry

    def is_enabled(self, tool: Tool) -> bool:
        cfg = self.config
        if tool.name in cfg.disabled:
            return False
        if SHELL_TAG in tool.tags and not cfg.shell_enabled:
            return False
        if NETWORK_TAG in tool.tags and not cfg.web_enabled:
            return False
        if cfg.enabled is not None:
            return tool.name in cfg.enabled
        switched_on = (SHELL_TAG in tool.tags and cfg.shell_enabled) or (NETWORK_TAG in tool.tags and cfg.web_enabled)
        return tool.enabled_by_default or switched_on

    def register(self, tool: Tool) -> None:
        """Add a tool; a bad name, schema or side-effect class is refused with a :class:`ToolError`."""
        if not isinstance(tool, Tool):
            raise ToolError(f"{tool!r} is not an aios_core.tool.Tool")
        if not _NAME.match(tool.name):
            raise ToolError(f"tool name {tool.name!r} is invalid: use 1-64 letters, digits, '_', '.' or '-'")
        if tool.name in self._tools:
            raise ToolError(f"a tool named {tool.name!r} is already registered")
        if tool.side_effect not in ("none", "read", "write", "irreversible"):
            raise ToolError(f"tool {tool.name!r}: unknown side_effect {tool.side_effect!r}")
        try:
            ToolSpec(name=tool.name, description=tool.description, parameters=tool.parameters)
        except Exception as exc:  # noqa: BLE001 - pydantic's message names the problem
            raise ToolError(f"tool {tool.name!r} has an invalid parameter schema: {exc}") from None
        timeout = min(self.config.default_timeout or tool.timeout, self.config.max_timeout)
        limit = self.config.concurrency.get(tool.name, tool.max_concurrency)
        self._tools[tool.name] = _Registered(tool, jsonschema.Draft202012Validator(tool.parameters), asyncio.Semaphore(max(1, limit)), timeout)

    def get(self, name: str) -> Tool | None:
        reg = self._tools.get(name)
        return reg.tool if reg is not None and self.is_enabled(reg.tool) else None

    def available(self) -> list[Tool]:
        return [r.tool for r in self._tools.values() if self.is_enabled(r.tool)]

    def specs(self, agent: "AgentLike | None" = None) -> list[ToolSpec]:
        """Tool specs to offer a model: enabled tools, narrowed to what ``agent``'s group may call."""
        out = []
        for tool in self.available():
            if agent is not None and not self.access.policy(agent, "tool", tool.name)[0]:
                continue
            out.append(ToolSpec(name=tool.name, description=tool.description, parameters=tool.parameters))
        return out

    # ------------------------------------------------------------------ calls

    async def handle(self, syscall: "ToolSyscall", agent: "AgentLike") -> list[ToolResult]:
        return await self.run_calls(agent, syscall.calls, client_tools=syscall.client_tools)

    async def run_calls(
        self, agent: "AgentLike", calls: list[ToolCall], *, parallel: bool | None = None, client_tools: list[ClientTool] | None = None
    ) -> list[ToolResult]:
        """Run calls (concurrently unless ``parallel`` is False); results come back in the calls' order.

        Calls naming one of ``client_tools`` are checked, authorized and audited, not run (see :meth:`call`).
        """
        parallel = self.config.parallel if parallel is None else parallel
        hosted = {t.name: t for t in client_tools or ()}
        if parallel and len(calls) > 1:
            return list(await asyncio.gather(*(self.call(agent, c, client=hosted.get(c.name)) for c in calls)))
        return [await self.call(agent, c, client=hosted.get(c.name)) for c in calls]

    async def call(self, agent: "AgentLike", call: ToolCall, *, client: ClientTool | None = None) -> ToolResult:
        """Run one call; with ``client`` (a tool of the caller's process) only check, authorize and audit it."""
        start = time.monotonic()
        self.stats["calls"] += 1
        try:
            output = await (self._authorize_client_call(agent, call, client) if client is not None else self._call(agent, call))
        except asyncio.CancelledError:
            raise
        except AIOSError as exc:
            self.stats["failed"] += 1
            if isinstance(exc, AccessDeniedError):
                self.stats["denied"] += 1
            if exc.details.get("reason") == "timeout":
                self.stats["timeouts"] += 1
            if exc.details.get("reason") == "invalid_arguments":
                self.stats["invalid"] += 1
            return ToolResult(call_id=call.id, name=call.name, ok=False, error=exc.message, error_type=exc.code, elapsed=time.monotonic() - start)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the tool's own exception (sys.exit() too), reported to the model
            self.stats["failed"] += 1
            return ToolResult(
                call_id=call.id, name=call.name, ok=False, error=f"{type(exc).__name__}: {exc}", error_type="tool_raised", elapsed=time.monotonic() - start
            )
        return ToolResult(call_id=call.id, name=call.name, ok=True, output=self._bounded(output), elapsed=time.monotonic() - start)

    async def _authorize_client_call(self, agent: "AgentLike", call: ToolCall, spec: ClientTool) -> dict[str, Any]:
        """Everything a kernel-hosted call goes through except running it: the caller runs its own tool."""
        if spec.name in self._tools:
            raise ToolError(
                f"tool {spec.name!r} is hosted by the kernel; a caller cannot declare its own tool under that name",
                reason="name_taken",
            )
        validator = self._client_validators.get(spec.name)
        if validator is None or validator.schema != spec.parameters:
            validator = self._client_validators[spec.name] = jsonschema.Draft202012Validator(spec.parameters)
        arguments = dict(call.arguments)
        self._check_arguments(spec.name, validator, arguments)
        await self.access.authorize(
            agent, "tool", spec.name, irreversible=spec.side_effect == "irreversible",
            detail={"call_id": call.id, "arguments": arguments, "hosted": "caller"},
        )
        self.stats["client_calls"] += 1
        return {"authorized": True, "hosted": "caller"}

    @staticmethod
    def _check_arguments(name: str, validator: Any, arguments: dict[str, Any]) -> None:
        if "_ctx" in arguments:
            raise ToolError("argument '_ctx' is reserved for the kernel", reason="invalid_arguments")
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            msgs = []
            for err in errors[:3]:
                where = "/".join(str(p) for p in err.absolute_path)
                msgs.append(f"{where}: {err.message}" if where else err.message)
            raise ToolError(f"invalid arguments for {name}: {'; '.join(msgs)}", reason="invalid_arguments")

    async def _call(self, agent: "AgentLike", call: ToolCall) -> Any:
        reg = self._tools.get(call.name)
        if reg is None or not self.is_enabled(reg.tool):
            names = ", ".join(t.name for t in self.available()) or "none"
            state = "is disabled in this kernel" if reg is not None else "does not exist"
            raise ToolError(f"tool {call.name!r} {state}; available tools: {names}", reason="unknown_tool")
        tool = reg.tool
        arguments = dict(call.arguments)
        self._check_arguments(tool.name, reg.validator, arguments)
        await self.access.authorize(
            agent, "tool", tool.name, irreversible=tool.side_effect == "irreversible", detail={"call_id": call.id, "arguments": arguments}
        )
        async with reg.semaphore:
            return await self._run(agent, call, reg, arguments)

    async def _run(self, agent: "AgentLike", call: ToolCall, reg: _Registered, arguments: dict[str, Any]) -> Any:
        tool = reg.tool
        confinement = self.confinement(agent)
        if tool.sandboxed:
            limits = SandboxLimits(timeout=reg.timeout, memory_mb=tool.memory_mb, processes=self.config.max_processes)
            return await call_sandboxed(tool.func, arguments, limits=limits, root=self.sandbox_dir, confinement=confinement)
        if tool.wants_context:
            limits = SandboxLimits(timeout=max(1.0, reg.timeout - 1.0), memory_mb=self.config.python_memory_mb, processes=self.config.max_processes)
            arguments["_ctx"] = ToolContext(agent, call.id, self.storage, limits, self.sandbox_dir, self.config, confinement=confinement)
        try:
            async with asyncio.timeout(reg.timeout):
                if inspect.iscoroutinefunction(tool.func):
                    return await tool.func(**arguments)
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._threads, lambda: tool.func(**arguments))
                if inspect.isawaitable(result):
                    result = await result
                return result
        except TimeoutError:
            raise ToolError(f"tool {tool.name} did not finish within {reg.timeout:g} s and was abandoned", reason="timeout") from None

    def confinement(self, agent: "AgentLike") -> Confinement:
        """How code run for ``agent`` is confined: the configured mode; the network only if its group is listed."""
        return Confinement(isolation=self.config.isolation, network=agent.group in self.config.network_groups)

    def _bounded(self, output: Any) -> Any:
        if isinstance(output, BaseModel):
            output = output.model_dump(mode="json")
        try:
            text = json.dumps(output, ensure_ascii=False)
        except (TypeError, ValueError):
            output = json.loads(json.dumps(output, ensure_ascii=False, default=str))
            text = json.dumps(output, ensure_ascii=False)
        limit = self.config.max_output_bytes
        if len(text) > limit:
            return {"truncated": True, "size": len(text), "head": text[:limit]}
        return output

    async def aclose(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
