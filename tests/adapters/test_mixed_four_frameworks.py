"""All four frameworks in one process, on one kernel: AutoGen, LangChain/LangGraph, MetaGPT, Open-Interpreter.

Twenty agents run at once: AutoGen assistants and LangGraph ReAct agents on
the test's loop (each calls a tool), MetaGPT roles gathered by one Environment
run, and Open-Interpreter sessions in threads (each has the model write code
that runs in the kernel's sandbox). Every syscall must be scheduled on the one
kernel, and the audit log must name the agent (and group) that made it: each
agent's identity travels in context variables across tasks and threads,
never through a process-wide global.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re

import pytest

# installed by scripts/setup.sh: a missing or broken install fails these tests, it does not skip them
importlib.import_module("autogen_agentchat")
importlib.import_module("langgraph.prebuilt")
importlib.import_module("metagpt.roles")  # first: MetaGPT completes its pydantic models when its roles are imported
importlib.import_module("interpreter")

from scripted_cores import ScriptedSimCore

import aios
from aios_core.config import load_config
from aios_core.managers.audit import read_audit
from aios_core.syscalls import LLMRequest

pytestmark = [pytest.mark.frameworks, pytest.mark.filterwarnings("ignore:create_react_agent has been moved")]

ACCESS = {"groups": {"default": {}, "writers": {}, "coders": {"preapproved": ["tool:python"]}}}


def oi_writes_a_check(request: LLMRequest) -> str | None:
    """Open-Interpreter sessions ask "run the check for <name>": the model writes code printing that name."""
    if not request.tools or request.tools[0].name != "execute" or request.messages[-1].role == "tool":
        return None  # everyone else (and OI's second turn) gets the sim's own answer
    name = re.search(r"check for (\w+)", request.messages[-1].content or "").group(1)
    return json.dumps({"tool_calls": [{"name": "execute", "arguments": {"language": "python", "code": f"print({name!r})"}}]})


@pytest.fixture
def kernel(make_sim_kernel):
    kernel = make_sim_kernel(
        config=load_config(managers={"access": ACCESS}), cores=[ScriptedSimCore(oi_writes_a_check, t0=0.002, max_batch=32)]
    )
    with (
        aios.patched("autogen", kernel),
        aios.patched("langchain", kernel),
        aios.patched("metagpt", kernel, group="writers"),
        aios.patched("open-interpreter", kernel, group="coders"),
    ):
        yield kernel


async def test_twenty_agents_of_four_frameworks_share_one_kernel_and_the_audit_names_each(kernel) -> None:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import ToolCallExecutionEvent
    from autogen_ext.models.openai import OpenAIChatCompletionClient
    from interpreter import OpenInterpreter
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.prebuilt import create_react_agent
    from metagpt.actions import Action, UserRequirement
    from metagpt.config2 import Config
    from metagpt.context import Context
    from metagpt.environment import Environment
    from metagpt.roles import Role
    from metagpt.schema import Message

    # --- AutoGen: assistants with an async tool
    async def lookup(topic: str) -> str:
        """Look a topic up in the knowledge base."""
        return f"notes on {topic}"

    client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-unused")
    autogen_agents = [AssistantAgent(f"ag{i}", model_client=client, tools=[lookup]) for i in range(5)]

    # --- LangGraph: a ReAct agent with a sync tool, invoked as five agents (async and in threads)
    @tool
    def measure(item: str) -> str:
        """Measure an item."""
        return f"{item} is 3 m long"

    graph = create_react_agent(ChatOpenAI(model="gpt-4o-mini", api_key="sk-unused"), [measure])

    async def langgraph_async(i: int):
        return await graph.ainvoke({"messages": [("user", f"measure thing {i}")]}, {"metadata": {"aios_agent": f"lg{i}"}})

    def langgraph_sync(i: int):
        with aios.agent_scope(f"lg{i}"):
            return graph.invoke({"messages": [("user", f"measure object {i}")]})

    # --- MetaGPT: five roles with a custom action, gathered by one Environment run
    class Draft(Action):
        name: str = "Draft"

        async def run(self, topic: str) -> str:
            return await self._aask(f"Draft a note on {topic}.")

    class Writer(Role):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.set_actions([Draft])

        async def _act(self) -> Message:
            text = await self.rc.todo.run(self.get_memories(k=1)[0].content)
            return Message(content=text, role=self.profile, cause_by=Draft)

    ctx = Context(config=Config.from_llm_config({"api_type": "openai", "api_key": "sk-unused", "model": "gpt-4o-mini", "stream": True}))
    env = Environment(context=ctx)
    env.add_roles([Writer(name=f"mg{i}", profile=f"Writer {i}", context=ctx) for i in range(5)])
    env.publish_message(Message(content="the kernel", cause_by=UserRequirement))

    # --- Open-Interpreter: five sessions, each in its own thread
    interpreters = []
    for i in range(5):
        interpreter = OpenInterpreter(auto_run=True, disable_telemetry=True, conversation_history=False)
        interpreter.name = f"oi{i}"
        interpreters.append(interpreter)

    results = await asyncio.gather(
        *(agent.run(task=f"research topic {i}") for i, agent in enumerate(autogen_agents)),
        *(langgraph_async(i) for i in range(3)),
        *(asyncio.to_thread(langgraph_sync, i) for i in range(3, 5)),
        env.run(),
        *(asyncio.to_thread(oi.chat, f"Please run the check for {oi.name}.", display=False) for oi in interpreters),
    )

    # every framework got its own answers and tool results back
    for result in results[:5]:
        [execution] = [m for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
        assert execution.content[0].content.startswith("notes on ") and not execution.content[0].is_error
    for result in results[5:10]:
        assert any(str(m.content).endswith(" is 3 m long") for m in result["messages"])
    for oi, messages in zip(interpreters, results[11:]):
        code_output = [m["content"] for m in messages if m["role"] == "computer"]
        assert code_output == [f"{oi.name}\n"]  # its own code ran (in the sandbox) and came back to it

    names = {f"{prefix}{i}" for prefix in ("ag", "lg", "mg", "oi") for i in range(5)}
    frameworks = {"ag": "autogen", "lg": "langchain", "mg": "metagpt", "oi": "open-interpreter"}
    for name in names:
        record = kernel.agents.get(name)
        assert record.framework == frameworks[name[:2]] and record.by_kind.get("llm", 0) >= 1 and record.failed == 0, name

    # attribution: a MetaGPT role's prompt was built by that role; an interpreter's code is its own
    for syscall, _ in kernel.llm_calls():
        if syscall.agent.startswith("mg"):
            assert f"named {syscall.agent}," in syscall.request.messages[0].content
    for syscall, (result,) in kernel.tool_calls():
        if syscall.agent.startswith("oi"):
            assert result.output["stdout"] == f"{syscall.agent}\n"
    # all scheduled on the one kernel, and decoded together
    assert {s.agent for s, _ in kernel.served} == names
    assert kernel.stats()["pools"]["sim"]["cores"][0]["mean_batch"] > 1.0

    # the audit log names every agent and its group, and nothing else
    kernel.managers.audit.flush()
    audit = read_audit(kernel.config.data_dir / "audit.db", limit=10_000)
    assert {r.agent for r in audit} == names
    groups = {"ag": "default", "lg": "default", "mg": "writers", "oi": "coders"}
    assert all(r.group == groups[r.agent[:2]] for r in audit)
    for name in names:
        mine = [r for r in audit if r.agent == name]
        assert any(r.action == "llm" and r.decision == "allow" for r in mine), name
        tools = [r for r in mine if r.action == "tool"]
        if name.startswith("oi"):
            assert [(r.resource, r.decision, r.irreversible) for r in tools] == [("python", "allow", True)]
        elif name.startswith(("ag", "lg")):
            assert tools and tools[0].resource.startswith(frameworks[name[:2]] + ".")
        else:
            assert not tools
