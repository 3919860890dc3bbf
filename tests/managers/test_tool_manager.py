import asyncio
import signal
import sys

import pytest
import sandboxed_tool_funcs as funcs
from managers_testkit import agent

from aios_core.clock import run_virtual
from aios_core.errors import ToolError
from aios_core.managers import sandbox
from aios_core.managers.tools import ToolConfig, ToolManager, ToolResult
from aios_core.syscalls import ToolCall, ToolSyscall
from aios_core.tool import Tool

ALICE = agent("alice")
NUMBERS = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"], "additionalProperties": False}
NOTHING = {"type": "object", "properties": {}}


async def slow_echo(text: str, delay: float = 0.2) -> str:
    await asyncio.sleep(delay)
    return text


async def hang_async() -> None:
    await asyncio.sleep(3600)


def plus(a: int, b: int) -> int:
    return a + b


def _tools(*extra: Tool) -> dict[str, Tool]:
    base = [
        Tool("plus", "add", NUMBERS, plus),
        Tool("echo", "echo after a delay", {"type": "object", "properties": {"text": {"type": "string"}, "delay": {"type": "number"}}, "required": ["text"]},
             slow_echo, max_concurrency=16),
        Tool("hang", "never returns", NOTHING, hang_async, timeout=0.3),
        Tool("sandboxed_add", "add in a subprocess", NUMBERS, funcs.add, sandboxed=True, timeout=20),
        Tool("sandboxed_hang", "sleeps forever in a subprocess", NOTHING, funcs.hang, sandboxed=True, timeout=1.0),
        Tool("sandboxed_spin", "burns CPU forever in a subprocess", NOTHING, funcs.spin, sandboxed=True, timeout=1.0),
        Tool("memory_hog", "allocates 4 GiB", NOTHING, funcs.eat_memory, sandboxed=True, memory_mb=128, timeout=20),
        Tool("memory_leak", "grows 8 MiB at a time", NOTHING, funcs.grow_memory, sandboxed=True, memory_mb=128, timeout=20),
        Tool("quitter", "calls sys.exit", NOTHING, lambda: sys.exit(3)),
        Tool("sandboxed_fail", "raises", NOTHING, funcs.fail, sandboxed=True, timeout=20),
        Tool("dangerous", "irreversible", NOTHING, lambda: "done", side_effect="irreversible"),
    ]
    return {t.name: t for t in [*base, *extra]}


def call(name, **arguments):
    return ToolCall(name=name, arguments=arguments)


async def test_valid_call_returns_a_result_per_call(make_managers):
    tm = make_managers(plugin_tools=_tools()).tools
    [res] = await tm.run_calls(ALICE, [call("plus", a=2, b=3)])
    assert isinstance(res, ToolResult) and res.ok and res.output == 5 and res.name == "plus"


@pytest.mark.parametrize(
    "arguments, message",
    [({"a": "two", "b": 3}, "'two' is not of type 'integer'"), ({"a": 1}, "'b' is a required property"), ({"a": 1, "b": 2, "c": 3}, "Additional properties")],
)
async def test_schema_invalid_arguments_never_reach_the_tool(make_managers, arguments, message):
    calls = []

    def spy(**kw):
        calls.append(kw)

    tm = make_managers(plugin_tools={"spy": Tool("spy", "", NUMBERS, spy)}).tools
    [res] = await tm.run_calls(ALICE, [ToolCall(name="spy", arguments=arguments)])
    assert not res.ok and res.error_type == "tool_error" and message in res.error
    assert calls == [] and tm.stats["invalid"] == 1


async def test_unknown_tool_and_reserved_argument(make_managers):
    tm = make_managers(plugin_tools=_tools()).tools
    unknown, reserved = await tm.run_calls(ALICE, [call("nope"), call("plus", a=1, b=2, _ctx="x")])
    assert "does not exist" in unknown.error and "plus" in unknown.error
    assert "reserved" in reserved.error


def test_hanging_async_tool_times_out(make_managers):
    # virtual time: the deadline is read off the loop's clock exactly, and a missing one lets the
    # hour-long sleep finish at once instead of hanging the test
    async def main() -> tuple[ToolResult, float]:
        tm = make_managers(plugin_tools=_tools()).tools
        loop = asyncio.get_running_loop()
        start = loop.time()
        [res] = await tm.run_calls(ALICE, [call("hang")])
        return res, loop.time() - start

    res, took = run_virtual(main())
    assert not res.ok and "did not finish within 0.3 s" in res.error and res.error_type == "tool_error"
    assert took == pytest.approx(0.3)  # catches: an async tool's timeout not applied, or applied late


@pytest.mark.timeout(120)  # bounds the hang a missing kill would be (the sleeping tool never ends on its own)
@pytest.mark.parametrize("name", ["sandboxed_hang", "sandboxed_spin"])
async def test_hanging_sandboxed_tool_is_killed(make_managers, monkeypatch, name):
    children: list[asyncio.subprocess.Process] = []
    supervise = sandbox._supervise

    async def watched(proc, *args, **kwargs):
        children.append(proc)
        return await supervise(proc, *args, **kwargs)

    monkeypatch.setattr(sandbox, "_supervise", watched)
    tm = make_managers(plugin_tools=_tools()).tools
    [res] = await tm.run_calls(ALICE, [call(name)])
    assert not res.ok and "timed out after 1 s and was killed" in res.error and tm.stats["timeouts"] == 1
    # catches: the child left to end by itself (the spinner's CPU rlimit sends SIGXCPU; the sleeper never ends)
    [child] = children
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("name", ["memory_hog", "memory_leak"])
async def test_tool_that_eats_memory_is_stopped_and_the_kernel_lives_on(make_managers, name):
    tm = make_managers(plugin_tools=_tools()).tools
    [res] = await tm.run_calls(ALICE, [call(name)])
    assert not res.ok and "exceeded its memory limit of 128 MiB" in res.error
    [ok] = await tm.run_calls(ALICE, [call("sandboxed_add", a=20, b=22)])
    assert ok.ok and ok.output == 42


async def test_a_tool_that_calls_sys_exit_fails_alone(make_managers):
    tm = make_managers(plugin_tools=_tools()).tools
    quit_, ok = await tm.run_calls(ALICE, [call("quitter"), call("plus", a=1, b=2)])
    assert not quit_.ok and quit_.error_type == "tool_raised" and "SystemExit" in quit_.error
    assert ok.ok and ok.output == 3


async def test_sandboxed_tool_errors_are_reported(make_managers):
    tm = make_managers(plugin_tools=_tools()).tools
    [res] = await tm.run_calls(ALICE, [call("sandboxed_fail")])
    assert not res.ok and "ValueError: the tool's own error" in res.error


async def test_one_failing_call_does_not_lose_the_others(make_managers):
    tm = make_managers(plugin_tools=_tools()).tools
    calls = [call("plus", a=1, b=1), call("hang"), call("plus", a="x", b=1), call("echo", text="hi", delay=0.01)]
    results = await tm.run_calls(ALICE, calls)
    assert [r.ok for r in results] == [True, False, False, True]
    assert [r.call_id for r in results] == [c.id for c in calls]  # order kept
    assert results[0].output == 2 and results[3].output == "hi"


def test_independent_calls_run_in_parallel(make_managers):
    inside = 0
    peaks: list[int] = []

    async def counted(text: str) -> str:
        """Counts the calls inside at once; each stays 0.2 s (virtual) so the others can join it."""
        nonlocal inside
        inside += 1
        peaks.append(inside)
        await asyncio.sleep(0.2)
        inside -= 1
        return text

    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}

    async def main() -> tuple[list[ToolResult], float, float]:
        tm = make_managers(plugin_tools={"counted": Tool("counted", "", schema, counted, max_concurrency=16)}).tools
        calls = [call("counted", text=str(i)) for i in range(8)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        results = await tm.run_calls(ALICE, calls)
        parallel, start = loop.time() - start, loop.time()
        peaks.append(-1)  # separates the two runs
        await tm.run_calls(ALICE, calls[:3], parallel=False)
        return results, parallel, loop.time() - start

    results, parallel, serial = run_virtual(main())
    assert [r.output for r in results] == [str(i) for i in range(8)]
    together, one_by_one = peaks[: peaks.index(-1)], peaks[peaks.index(-1) + 1 :]
    assert max(together) == 8 and parallel == pytest.approx(0.2)  # catches: the calls of one syscall run one at a time
    assert max(one_by_one) == 1 and serial == pytest.approx(0.6)  # catches: parallel=False ignored (calls still overlap)


async def test_per_tool_concurrency_limit(make_managers):
    running = 0
    peak = 0

    async def tracked() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    tm = make_managers(plugin_tools={"tracked": Tool("tracked", "", NOTHING, tracked, max_concurrency=2)}).tools
    results = await tm.run_calls(ALICE, [call("tracked") for _ in range(6)])
    assert all(r.ok for r in results) and peak == 2


async def test_irreversible_tool_needs_confirmation(make_managers, confirm, audit_of):
    m = make_managers(plugin_tools=_tools())
    [denied] = await m.tools.run_calls(ALICE, [call("dangerous")])
    assert not denied.ok and denied.error_type == "access_denied" and "denied by default" in denied.error
    confirm.answer = True
    [allowed] = await m.tools.run_calls(ALICE, [call("dangerous")])
    assert allowed.ok and allowed.output == "done"
    assert [r.decision for r in audit_of(m, action="tool") if r.resource == "dangerous"] == ["deny", "allow"]


async def test_group_tool_whitelist(make_managers):
    m = make_managers(plugin_tools=_tools(), access={"groups": {"default": {}, "calc": {"tools": ["plus"]}}})
    limited = agent("limited", "calc")
    ok, denied = await m.tools.run_calls(limited, [call("plus", a=1, b=1), call("echo", text="x")])
    assert ok.ok and denied.error_type == "access_denied"
    assert [s.name for s in m.tools.specs(limited)] == ["plus"]


async def test_bad_plugin_tools_are_refused_at_registration(make_managers):
    bad_schema = Tool("bad_schema", "", {"type": "array"}, plus)
    bad_name = Tool("bad name!", "", NOTHING, plus)
    tm = make_managers(plugin_tools={"a": bad_schema, "b": bad_name, "plus": Tool("plus", "", NUMBERS, plus)}).tools
    assert [t.name for t in tm.available()] == ["plus"]
    assert len(tm.errors) == 2
    with pytest.raises(ToolError, match="already registered"):
        tm.register(Tool("plus", "", NUMBERS, plus))


def test_sandboxed_tools_must_be_importable():
    from aios_core.managers.sandbox import import_target

    with pytest.raises(ToolError, match="module-level"):
        import_target(lambda: 1)
    assert import_target(funcs.add) == "sandboxed_tool_funcs:add"


async def test_enabling_rules():
    from aios_core.managers.access import AccessManager
    from aios_core.managers.builtin_tools import builtin_tools

    tools = {t.name: t for t in builtin_tools()}
    default = ToolManager(ToolConfig(), tools=tools, access=AccessManager())
    assert {"shell", "web_fetch"}.isdisjoint(t.name for t in default.available())
    assert "python" in {t.name for t in default.available()}
    switched = ToolManager(ToolConfig(shell_enabled=True, web_enabled=True, disabled=["python"]), tools=tools, access=AccessManager())
    names = {t.name for t in switched.available()}
    assert {"shell", "web_fetch"} <= names and "python" not in names
    only = ToolManager(ToolConfig(enabled=["calculator", "shell"]), tools=tools, access=AccessManager())
    assert {t.name for t in only.available()} == {"calculator"}  # shell still needs shell_enabled


async def test_syscall_entry(make_managers):
    tm = make_managers(plugin_tools=_tools()).tools
    results = await tm.handle(ToolSyscall(agent="alice", calls=[call("plus", a=1, b=2)]), ALICE)
    assert results[0].ok and results[0].as_message_content() == "3"
