"""AutoGen and LangChain agents side by side in one process, sharing one kernel.

Twenty agents of two frameworks run at once: AutoGen assistants with a tool
on the test's loop, LangGraph ReAct agents on the same loop, and synchronous
LangChain agents in threads. The kernel must keep every call attributed to
the agent that made it (identity travels in context variables, never in a
global), batch them together on the model, and hand each framework its own
answers and tool results.
"""

from __future__ import annotations

import asyncio
import importlib

import pytest

# installed by scripts/setup.sh: a missing or broken install fails these tests, it does not skip them
importlib.import_module("autogen_agentchat")
importlib.import_module("langgraph.prebuilt")

from adapters_testkit import RecordingKernel
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_ext.models.openai import OpenAIChatCompletionClient
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

import aios

pytestmark = [pytest.mark.frameworks, pytest.mark.filterwarnings("ignore:create_react_agent has been moved")]


@pytest.fixture
def both_patched(sim_kernel: RecordingKernel):
    with aios.patched("autogen", sim_kernel), aios.patched("langchain", sim_kernel):
        yield sim_kernel


async def test_twenty_agents_of_two_frameworks_share_one_kernel(both_patched: RecordingKernel) -> None:
    from langgraph.prebuilt import create_react_agent

    kernel = both_patched

    async def lookup(topic: str) -> str:
        """Look a topic up in the knowledge base."""
        await asyncio.sleep(0)
        return f"notes on {topic}"

    @tool
    def measure(item: str) -> str:
        """Measure an item."""
        return f"{item} is 3 m long"

    client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-unused")
    autogen_agents = [AssistantAgent(f"ag{i}", model_client=client, tools=[lookup]) for i in range(10)]
    graph = create_react_agent(ChatOpenAI(model="gpt-4o-mini", api_key="sk-unused"), [measure])

    async def run_langgraph(i: int):
        return await graph.ainvoke({"messages": [("user", f"measure thing {i}")]}, {"metadata": {"aios_agent": f"lg{i}"}})

    def run_langgraph_sync(i: int):
        with aios.agent_scope(f"lgs{i}", program=f"session-{i}"):
            return graph.invoke({"messages": [("user", f"measure object {i}")]})

    results = await asyncio.gather(
        *(agent.run(task=f"research topic {i}") for i, agent in enumerate(autogen_agents)),
        *(run_langgraph(i) for i in range(5)),
        *(asyncio.to_thread(run_langgraph_sync, i) for i in range(5)),
    )

    for result in results[:10]:
        [execution] = [m for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
        assert execution.content[0].content.startswith("notes on ") and not execution.content[0].is_error
    for result in results[10:]:
        [observation] = [m for m in result["messages"] if isinstance(m, ToolMessage)]
        assert observation.content.endswith(" is 3 m long")

    names = [f"ag{i}" for i in range(10)] + [f"lg{i}" for i in range(5)] + [f"lgs{i}" for i in range(5)]
    for name in names:
        record = kernel.agents.get(name)
        expected = {"llm": 1, "tool": 1} if name.startswith("ag") else {"llm": 2, "tool": 1}
        assert record.by_kind == expected, name
        assert record.framework == ("autogen" if name.startswith("ag") else "langchain")
        assert record.prompt_tokens > 0 and record.completion_tokens > 0 and record.failed == 0
    # every syscall was made by the agent it names, within its own program
    for syscall, _ in kernel.served:
        assert syscall.agent in names
        if syscall.agent.startswith("lgs"):
            assert syscall.program == f"session-{syscall.agent[3:]}"
    assert len(kernel.llm_calls()) == 10 + 2 * 10 and len(kernel.tool_calls()) == 20
    # the two frameworks' calls were batched together on the model
    core = kernel.stats()["pools"]["sim"]["cores"][0]
    assert core["mean_batch"] > 1.0
