"""Framework tools run under the kernel's tool manager: validated, access-checked, limited, timed, audited.

(Behind a remote kernel, which cannot call functions of this process, a framework tool is declared with
each call as a :class:`~aios_core.syscalls.ClientTool`: the kernel validates the arguments against its
schema, asks the access manager and audits the call, and only then does the adapter run the tool here,
under the patch's ``tool_timeout`` and ``tool_concurrency``.)

A framework tool (an AutoGen ``BaseTool``, a LangChain ``BaseTool``) becomes
a :class:`~aios_core.tool.Tool` in the kernel's tool manager the first time it
is called, under ``<framework>.<tool name>`` (access policies can name it, or
``<framework>.*``). Each call is a :class:`ToolSyscall` of the calling agent.
The manager validates the model's arguments against the tool's JSON schema,
asks the access manager, takes a slot of the tool's concurrency limit and
starts the timeout; only then does it run the registered function, which hands
control back to the framework: the framework's own tool code runs where the
caller runs (its loop and context for async tools, a worker thread with the
caller's context for sync ones), so the tool behaves exactly as without AIOS.

The framework's return value (or exception) comes back to the caller as it
was, not as the manager's JSON rendering of it; the manager sees the text form
for its output limit and audit. A call the manager refuses raises a typed
error (:class:`ToolError`, :class:`AccessDeniedError`) naming the reason.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aios.adapters.shared.names import safe_tool_name

from aios_core import bridge
from aios_core.errors import AccessDeniedError, ToolError
from aios_core.identity import AgentIdentity
from aios_core.syscalls import ClientTool, ToolCall, ToolSyscall
from aios_core.tool import Tool

if TYPE_CHECKING:
    from aios.adapters.shared.route import Route

    from aios_core.managers.tools import ToolContext, ToolResult
    from aios_core.port import ToolRegistry

log = logging.getLogger(__name__)

#: the framework tool objects whose routed execution is under way in this context: re-entering the same
#: tool (a subclass's run_json calling super().run_json) runs directly instead of issuing a second syscall,
#: while other tools called from inside a tool (an agent used as a tool) are routed as usual
_running: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("aios_adapter_tools_running", default=frozenset())


@dataclass(frozen=True)
class FrameworkTool:
    """What the tool manager needs to know of a framework tool: its name and the schema the model sees."""

    name: str
    description: str
    parameters: dict[str, Any]


ErrorFactory = Callable[[str, str, str], BaseException]


def default_error(error_type: str, message: str, tool: str) -> BaseException:
    if error_type == AccessDeniedError.code:
        return AccessDeniedError(message, tool=tool)
    return ToolError(message, tool=tool, error_type=error_type)


@dataclass
class _Binding:
    """One call in flight: how to run the framework's tool, and what it produced."""

    run: Callable[[], Any]
    context: contextvars.Context
    loop: asyncio.AbstractEventLoop | None
    describe: Callable[[Any], str]
    value: Any = None
    error: BaseException | None = None
    finished: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


#: calls in flight, by tool-call id; shared by every router so that a registration outlives a re-patch
_pending: dict[str, _Binding] = {}
_threads: ThreadPoolExecutor | None = None
_threads_lock = threading.Lock()


async def _dispatch(_ctx: ToolContext, **arguments: Any) -> str:
    """The function registered in the tool manager: runs the waiting caller's framework tool."""
    binding = _pending.get(_ctx.call_id)
    if binding is None:
        raise ToolError(f"no caller is waiting for tool call {_ctx.call_id}; it may have been cancelled")
    try:
        if binding.loop is not None:
            value = await bridge.run_async(binding.loop, binding.run, context=binding.context)
        else:
            loop = asyncio.get_running_loop()
            value = await loop.run_in_executor(_executor(), binding.context.run, binding.run)
    except Exception as exc:
        binding.error = exc
        raise
    binding.value, binding.finished = value, True
    try:
        return binding.describe(value)
    except Exception:  # noqa: BLE001 - the text form is only for the manager's output limit and audit
        return repr(value)


def _executor() -> ThreadPoolExecutor:
    """Threads for sync framework tools (the caller's thread is blocked in the kernel call meanwhile)."""
    global _threads
    with _threads_lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="aios-framework-tool")
        return _threads


class ToolRouter:
    def __init__(self, route: Route) -> None:
        self.route = route
        self._names: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._warned = False
        #: per-tool concurrency limits of tools run here on a remote kernel's grant
        self._client_slots: dict[str, threading.BoundedSemaphore] = {}

    # ------------------------------------------------------------------ registration

    def manager(self) -> ToolRegistry | None:
        return self.route.kernel.tool_registry()

    def registered_name(self, manager: ToolRegistry, tool: FrameworkTool) -> str:
        """The manager's name for ``tool``; registers it on first use (one registration per name and schema)."""
        key = (tool.name, json.dumps(tool.parameters, sort_keys=True, default=str))
        name = self._names.get(key)
        if name is not None:
            return name
        with self._lock:
            name = self._names.get(key)
            if name is not None:
                return name
            base = f"{self.route.framework}.{safe_tool_name(tool.name, limit=50)}"
            name, n = base, 1
            while True:
                existing = manager.get(name)
                if existing is None and name not in self._names.values():
                    break
                if existing is not None and existing.func is _dispatch and existing.parameters == tool.parameters:
                    self._names[key] = name  # registered by an earlier patch of the same kernel
                    return name
                n += 1
                name = f"{base}.{n}"
            options = self.route.options
            manager.register(
                Tool(
                    name=name,
                    description=tool.description or f"{self.route.framework} tool {tool.name}",
                    parameters=tool.parameters,
                    func=_dispatch,
                    side_effect=options.tool_side_effect,
                    timeout=options.tool_timeout,
                    max_concurrency=options.tool_concurrency,
                    wants_context=True,
                    tags=(self.route.framework, "framework-tool"),
                )
            )
            self._names[key] = name
            return name

    # ------------------------------------------------------------------ the caller's side

    async def acall(
        self,
        identity: AgentIdentity,
        tool: FrameworkTool,
        arguments: dict[str, Any],
        run: Callable[[], Awaitable[Any]],
        *,
        owner: object = None,
        describe: Callable[[Any], str] = str,
        error: ErrorFactory = default_error,
    ) -> Any:
        """Run an async framework tool as ``identity``'s tool syscall; returns what ``run()`` returned.

        ``owner`` is the framework's tool object (re-entering it while it runs does not issue a second syscall).
        """
        key = id(owner) if owner is not None else hash(tool.name)
        if key in _running.get():
            return await run()
        manager = self.manager()
        if manager is None:
            if self.route.kernel.hosts_client_tools:
                return await self._acall_client_hosted(identity, tool, arguments, run, key, error)
            self._warn_unmanaged()
            return await run()
        call = self._call(manager, tool, arguments)
        binding = _Binding(run=run, context=self._context(key), loop=asyncio.get_running_loop(), describe=describe)
        _pending[call.id] = binding
        try:
            results = await self.route.kernel.acall(self._syscall(identity, call))
        finally:
            _pending.pop(call.id, None)
        return self._outcome(binding, results[0], tool, error)

    def call(
        self,
        identity: AgentIdentity,
        tool: FrameworkTool,
        arguments: dict[str, Any],
        run: Callable[[], Any],
        *,
        owner: object = None,
        describe: Callable[[Any], str] = str,
        error: ErrorFactory = default_error,
    ) -> Any:
        """Run a sync framework tool as ``identity``'s tool syscall (blocking); returns what ``run()`` returned."""
        key = id(owner) if owner is not None else hash(tool.name)
        if key in _running.get():
            return run()
        manager = self.manager()
        if manager is None:
            if self.route.kernel.hosts_client_tools:
                return self._call_client_hosted(identity, tool, arguments, run, key, error)
            self._warn_unmanaged()
            return run()
        call = self._call(manager, tool, arguments)
        binding = _Binding(run=run, context=self._context(key), loop=None, describe=describe)
        _pending[call.id] = binding
        try:
            results = self.route.kernel.call(self._syscall(identity, call))
        finally:
            _pending.pop(call.id, None)
        return self._outcome(binding, results[0], tool, error)

    # ------------------------------------------------------------------ behind a remote kernel

    def _client_syscall(self, identity: AgentIdentity, tool: FrameworkTool, arguments: dict[str, Any]) -> ToolSyscall:
        options = self.route.options
        name = f"{self.route.framework}.{safe_tool_name(tool.name, limit=50)}"
        spec = ClientTool(
            name=name, description=tool.description or f"{self.route.framework} tool {tool.name}",
            parameters=tool.parameters, side_effect=options.tool_side_effect,
        )
        call = ToolCall(id=f"{self.route.framework}-{uuid.uuid4().hex[:16]}", name=name, arguments=arguments)
        self.route.ensure_agent(identity)
        return ToolSyscall(calls=[call], client_tools=[spec], **self.route.syscall_fields(identity))

    @staticmethod
    def _granted(result: ToolResult, tool: FrameworkTool, error: ErrorFactory) -> None:
        if not result.ok:
            raise error(result.error_type or ToolError.code, result.error or "the kernel refused the tool call", tool.name)

    def _slots(self, name: str) -> threading.BoundedSemaphore:
        with self._lock:
            slot = self._client_slots.get(name)
            if slot is None:
                slot = self._client_slots[name] = threading.BoundedSemaphore(max(1, self.route.options.tool_concurrency))
            return slot

    async def _acall_client_hosted(
        self, identity: AgentIdentity, tool: FrameworkTool, arguments: dict[str, Any], run: Callable[[], Awaitable[Any]], key: int,
        error: ErrorFactory,
    ) -> Any:
        sc = self._client_syscall(identity, tool, arguments)
        self._granted((await self.route.kernel.acall(sc))[0], tool, error)
        slot = self._slots(sc.calls[0].name)
        if not slot.acquire(blocking=False):  # other callers of this tool hold every slot: wait in a thread, not by polling
            waiting = asyncio.get_running_loop().run_in_executor(None, slot.acquire)
            try:
                await asyncio.shield(waiting)
            except asyncio.CancelledError:
                waiting.add_done_callback(lambda _: slot.release())  # the slot it will get is given straight back
                raise
        token = _running.set(_running.get() | {key})
        try:
            async with asyncio.timeout(self.route.options.tool_timeout):
                return await run()
        except TimeoutError:
            raise ToolError(f"tool {tool.name} did not finish within {self.route.options.tool_timeout:g} s", tool=tool.name, reason="timeout") from None
        finally:
            _running.reset(token)
            slot.release()

    def _call_client_hosted(
        self, identity: AgentIdentity, tool: FrameworkTool, arguments: dict[str, Any], run: Callable[[], Any], key: int, error: ErrorFactory,
    ) -> Any:
        sc = self._client_syscall(identity, tool, arguments)
        self._granted(self.route.kernel.call(sc)[0], tool, error)
        # a sync tool cannot be interrupted from outside: it runs to its end in the caller's thread
        with self._slots(sc.calls[0].name):
            token = _running.set(_running.get() | {key})
            try:
                return run()
            finally:
                _running.reset(token)

    def _call(self, manager: ToolRegistry, tool: FrameworkTool, arguments: dict[str, Any]) -> ToolCall:
        name = self.registered_name(manager, tool)
        return ToolCall(id=f"{self.route.framework}-{uuid.uuid4().hex[:16]}", name=name, arguments=arguments)

    def _syscall(self, identity: AgentIdentity, call: ToolCall) -> ToolSyscall:
        self.route.ensure_agent(identity)
        return ToolSyscall(calls=[call], **self.route.syscall_fields(identity))

    @staticmethod
    def _context(key: int) -> contextvars.Context:
        """The caller's context, in which the tool will run, marked as running ``key``."""
        context = contextvars.copy_context()
        context.run(_running.set, context.run(_running.get) | {key})
        return context

    @staticmethod
    def _outcome(binding: _Binding, result: ToolResult, tool: FrameworkTool, error: ErrorFactory) -> Any:
        if binding.error is not None:
            raise binding.error
        if result.ok and binding.finished:
            return binding.value
        if result.ok:  # cannot happen: the manager reported success without running our function
            raise ToolError(f"tool {tool.name} reported success but did not run", tool=tool.name)
        raise error(result.error_type or ToolError.code, result.error or "the tool call failed", tool.name)

    def _warn_unmanaged(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "the kernel behind aios.patch(%r) has no tool manager (a remote kernel?): %s tools run in-process, unscheduled",
                self.route.framework,
                self.route.framework,
            )
