"""A patched framework whose kernel is a server: LLM calls and framework tools are the kernel's, tools run here.

A framework tool is a function of the agent's process, so the remote kernel cannot run it; the adapter
declares it with the call (a ClientTool) and the kernel validates, authorizes and audits the call first.
"""

from __future__ import annotations

import asyncio

import pytest
from langchain_core import tools as langchain_core_tools  # installed by scripts/setup.sh: missing or broken fails, never skips

import aios
from aios_core.errors import AccessDeniedError
from aios_core.managers.audit import read_audit
from aios_core.server.remote import connect

pytestmark = pytest.mark.frameworks

GROUPS = {"default": {}, "calculator-only": {"tools": ["calculator"]}}


@pytest.fixture
def lc_server(live_server):
    return live_server(managers={"embeddings": {"kind": "hashing", "dim": 64}, "access": {"groups": GROUPS}})


def _server_audit(server, agent):
    path = server.kernel.managers.audit.path
    server.on_loop(server.kernel.managers.audit.flush)
    return [r for r in read_audit(path, limit=1000) if r.agent == agent]


def test_a_langchain_tool_runs_here_after_the_remote_kernel_authorized_and_audited_it(lc_server):
    ran: list[str] = []

    @langchain_core_tools.tool
    def get_weather(city: str) -> str:
        """Weather of a city."""
        ran.append(city)
        return f"sunny in {city}"

    kernel = connect(lc_server.url, lc_server.admin)
    with aios.patched("langchain", kernel=kernel):
        with aios.agent_scope("forecaster"):
            assert get_weather.invoke({"city": "Oslo"}) == "sunny in Oslo"
            assert asyncio.run(get_weather.ainvoke({"city": "Bergen"})) == "sunny in Bergen"
        with aios.agent_scope("clerk", group="calculator-only"):
            with pytest.raises(AccessDeniedError, match="may not call tool 'langchain.get_weather'"):
                get_weather.invoke({"city": "Paris"})
    assert ran == ["Oslo", "Bergen"]  # the denied call never ran
    allowed = _server_audit(lc_server, "forecaster")
    assert [(r.resource, r.decision, r.detail.get("hosted")) for r in allowed] == [("langchain.get_weather", "allow", "caller")] * 2
    assert [(r.resource, r.decision) for r in _server_audit(lc_server, "clerk")] == [("langchain.get_weather", "deny")]
    assert lc_server.stats()["managers"]["tools"]["client_calls"] == 2


def test_a_caller_cannot_declare_a_kernel_tool_or_pass_arguments_its_schema_refuses(lc_server):
    from aios_core.syscalls import ClientTool, ToolCall, ToolSyscall

    kernel = connect(lc_server.url, lc_server.register("mallory"))
    impostor = ClientTool(name="python", parameters={"type": "object", "properties": {"code": {"type": "string"}}}, side_effect="none")
    [result] = kernel.call(ToolSyscall(agent="mallory", calls=[ToolCall(name="python", arguments={"code": "1"})], client_tools=[impostor]))
    assert not result.ok and "hosted by the kernel" in result.error
    strict = ClientTool(name="mine.lookup", parameters={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    [result] = kernel.call(ToolSyscall(agent="mallory", calls=[ToolCall(name="mine.lookup", arguments={"n": "x"})], client_tools=[strict]))
    assert not result.ok and "invalid arguments for mine.lookup" in result.error
    [result] = kernel.call(ToolSyscall(agent="mallory", calls=[ToolCall(name="mine.lookup", arguments={"n": 3})], client_tools=[strict]))
    assert result.ok and result.output == {"authorized": True, "hosted": "caller"}
