"""AutoGen 0.7 agents, tools and teams running through the kernel (sim core; one test on the Gemma model).

These drive the real framework: AgentChat agents and teams, the OpenAI model
client, FunctionTool and StaticWorkbench. Only the network is gone: every
model call is answered by the kernel, every tool call admitted by its tool
manager. Assertions compare what the framework got with what the kernel
served and accounted for.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sqlite3

import pytest

# installed by scripts/setup.sh: a missing or broken install fails these tests (the imports below), it does not skip them
from adapters_testkit import RecordingKernel, fast_sim_core
from aios.adapters.autogen.adapter import ADAPTER
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import (
    ModelClientStreamingChunkEvent,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
    ToolCallSummaryMessage,
)
from autogen_agentchat.teams import BaseGroupChat, RoundRobinGroupChat, SelectorGroupChat
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, CreateResult, ModelInfo, RequestUsage, SystemMessage, UserMessage
from autogen_core.tools import BaseStreamTool, BaseTool, FunctionTool, StaticWorkbench
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.models.openai._openai_client import BaseOpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient
from pydantic import BaseModel
from scripted_cores import gemma_core

import aios
from aios_core.errors import AIOSError, ConfigError, ToolError
from aios_core.syscalls import LLMSyscall, ToolSyscall

pytestmark = pytest.mark.frameworks


def openai_client() -> OpenAIChatCompletionClient:
    # what AutoGen's docs write; the key is never used: the kernel answers
    return OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-unused")


@pytest.fixture
def patched(sim_kernel):
    adapter = aios.patch("autogen", sim_kernel)
    try:
        yield sim_kernel
    finally:
        aios.unpatch("autogen")
    assert not adapter.patched


async def test_assistant_reply_is_the_kernels_answer_and_is_accounted(patched: RecordingKernel) -> None:
    client = openai_client()
    agent = AssistantAgent("assistant", model_client=client, system_message="You are a helpful assistant.")

    result = await agent.run(task="Say hello.")

    [(syscall, response)] = patched.llm_calls()
    assert isinstance(result.messages[-1], TextMessage)
    assert result.messages[-1].content == response.content and response.content
    assert syscall.agent == "assistant" and syscall.program == "assistant"
    assert syscall.request.extra["framework_model"] == "gpt-4o-mini"
    assert [m.role for m in syscall.request.messages] == ["system", "user"]
    assert syscall.request.messages[1].content == "Say hello."
    assert syscall.timing.finished is not None and syscall.timing.service > 0
    record = patched.agents.get("assistant")
    assert record.framework == "autogen"
    assert record.by_kind == {"llm": 1}
    assert record.prompt_tokens == response.usage.prompt_tokens > 0
    assert record.completion_tokens == response.usage.completion_tokens > 0
    assert client.total_usage() == RequestUsage(response.usage.prompt_tokens, response.usage.completion_tokens)
    assert result.messages[-1].models_usage == RequestUsage(response.usage.prompt_tokens, response.usage.completion_tokens)


async def test_function_tool_call_runs_under_the_tool_manager_on_the_callers_loop(patched: RecordingKernel) -> None:
    seen: list[dict] = []
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")
    marker.set("from the test")

    async def get_weather(city: str) -> str:
        """Get the weather for a city."""
        seen.append({"city": city, "loop": asyncio.get_running_loop(), "marker": marker.get()})
        return f"The weather in {city} is 73 degrees and sunny."

    agent = AssistantAgent("weather_agent", model_client=openai_client(), tools=[get_weather])
    result = await agent.run(task="What is the weather in New York?")

    request, execution, summary = (m for m in result.messages if not isinstance(m, TextMessage))
    assert isinstance(request, ToolCallRequestEvent) and isinstance(execution, ToolCallExecutionEvent)
    [(llm_syscall, llm_response)] = patched.llm_calls()
    [planned] = llm_response.tool_calls
    assert llm_syscall.request.tools[0].name == "get_weather"
    # the model's call reached the framework intact, and the tool got exactly its arguments
    assert request.content[0].name == "get_weather" and json.loads(request.content[0].arguments) == planned.arguments
    assert [{"city": s["city"]} for s in seen] == [planned.arguments]
    # the framework's tool ran where the framework runs, with its context
    assert seen[0]["loop"] is asyncio.get_running_loop() and seen[0]["marker"] == "from the test"
    expected = f"The weather in {planned.arguments['city']} is 73 degrees and sunny."
    assert execution.content[0].content == expected and not execution.content[0].is_error
    assert isinstance(summary, ToolCallSummaryMessage) and summary.content == expected

    [(tool_syscall, [tool_result])] = patched.tool_calls()
    assert tool_syscall.agent == "weather_agent" and tool_syscall.calls[0].name == "autogen.get_weather"
    assert tool_result.ok and tool_result.output == expected
    assert patched.agents.get("weather_agent").by_kind == {"llm": 1, "tool": 1}
    tools = patched.managers.tools
    assert tools.get("autogen.get_weather") is not None and tools.stats["calls"] == 1
    patched.managers.audit.flush()
    with sqlite3.connect(patched.config.data_dir / "audit.db") as db:
        rows = db.execute("SELECT agent, action, resource, decision FROM audit WHERE action = 'tool'").fetchall()
    assert rows == [("weather_agent", "tool", "autogen.get_weather", "allow")]


async def test_schema_invalid_arguments_are_refused_before_the_tool_runs(patched: RecordingKernel) -> None:
    ran: list[object] = []

    def add(a: int, b: int) -> int:
        """Add two integers."""
        ran.append((a, b))
        return a + b

    tool = FunctionTool(add, description="Add two integers.")
    with pytest.raises(ToolError, match=r"invalid arguments for autogen\.add: a: 'two' is not of type 'integer'"):
        await tool.run_json({"a": "two", "b": 2}, CancellationToken())
    assert await tool.run_json({"a": 2, "b": 3}, CancellationToken()) == 5

    workbench = StaticWorkbench([tool])
    refused = await workbench.call_tool("add", {"a": 1})
    assert refused.is_error and "'b' is a required property" in refused.to_text()
    assert ran == [(2, 3)]
    assert patched.managers.tools.stats["invalid"] == 2
    assert patched.agents.get("autogen.tools").by_kind == {"tool": 3}


async def test_tool_exception_reaches_the_agent_as_autogen_reports_it(patched: RecordingKernel) -> None:
    async def lookup(key: str) -> str:
        """Look a key up."""
        raise KeyError(f"no entry {key}")

    agent = AssistantAgent("looker", model_client=openai_client(), tools=[lookup])
    result = await agent.run(task="look something up")
    execution = next(m for m in result.messages if isinstance(m, ToolCallExecutionEvent))
    assert execution.content[0].is_error and "no entry" in execution.content[0].content
    [(_, [tool_result])] = patched.tool_calls()
    assert not tool_result.ok and tool_result.error_type == "tool_raised"


async def test_streaming_client_and_agent(patched: RecordingKernel) -> None:
    client = openai_client()
    items = [item async for item in client.create_stream([UserMessage(content="Tell me a story.", source="user")])]
    *deltas, final = items
    assert isinstance(final, CreateResult) and len(deltas) > 1 and all(isinstance(d, str) for d in deltas)
    assert "".join(deltas) == final.content == patched.llm_calls()[0][1].content

    agent = AssistantAgent("streamer", model_client=client, model_client_stream=True)
    events = [e async for e in agent.run_stream(task="Tell me another story.")]
    chunks = [e.content for e in events if isinstance(e, ModelClientStreamingChunkEvent)]
    reply = [e for e in events if isinstance(e, TextMessage) and e.source == "streamer"]
    assert len(chunks) > 1 and "".join(chunks) == reply[0].content == patched.llm_calls()[1][1].content
    assert patched.llm_calls()[1][0].agent == "streamer"


async def test_round_robin_team_is_one_program_per_run(patched: RecordingKernel) -> None:
    client = openai_client()
    agents = [AssistantAgent(name, model_client=client, system_message=f"You are {name}.") for name in ("writer", "critic", "editor")]
    team = RoundRobinGroupChat(agents, max_turns=3)

    result = await team.run(task="Write a haiku about schedulers.")

    assert [m.source for m in result.messages] == ["user", "writer", "critic", "editor"]
    assert "Maximum number of turns 3 reached" in (result.stop_reason or "")
    calls = patched.llm_calls()
    assert [s.agent for s, _ in calls] == ["writer", "critic", "editor"]
    assert [m.content for m in result.messages[1:]] == [r.content for _, r in calls]
    programs = {s.program for s, _ in calls}
    assert len(programs) == 1 and next(iter(programs)).startswith("RoundRobinGroupChat-")
    for name in ("writer", "critic", "editor"):
        assert patched.agents.get(name).by_kind == {"llm": 1}

    await team.reset()
    await team.run(task="Another one.")
    second = {s.program for s, _ in patched.llm_calls()[3:]}
    assert len(second) == 1 and second != programs


async def test_selector_group_chat_chooses_speakers_through_the_kernel(patched: RecordingKernel) -> None:
    client = openai_client()
    planner = AssistantAgent("planner", model_client=client, description="Plans the work.")
    coder = AssistantAgent("coder", model_client=client, description="Writes the code.")
    team = SelectorGroupChat([planner, coder], model_client=client, max_turns=3)

    result = await team.run(task="Build a calculator.")

    assert "Maximum number of turns 3 reached" in (result.stop_reason or "")
    speakers = [m.source for m in result.messages[1:]]
    assert len(speakers) == 3 and set(speakers) <= {"planner", "coder"}
    calls = patched.llm_calls()
    by_agent = {s.agent for s, _ in calls}
    assert "SelectorGroupChat" in by_agent and set(speakers) <= by_agent
    assert len({s.program for s, _ in calls}) == 1


async def test_an_agent_used_as_a_tool_routes_its_own_calls(patched: RecordingKernel) -> None:
    from autogen_agentchat.tools import AgentTool

    async def get_weather(city: str) -> str:
        """Get the weather for a city."""
        return f"sunny in {city}"

    inner = AssistantAgent("forecaster", model_client=openai_client(), tools=[get_weather], description="Knows the weather.")
    outer = AssistantAgent("planner", model_client=openai_client(), tools=[AgentTool(inner)])

    result = await outer.run(task="Plan a picnic.")

    execution = next(m for m in result.messages if isinstance(m, ToolCallExecutionEvent))
    assert not execution.content[0].is_error and "sunny in" in execution.content[0].content
    tool_calls = [(s.agent, s.calls[0].name) for s, _ in patched.tool_calls()]
    # the inner agent's tool call finished first, inside the outer agent's tool call
    assert tool_calls == [("forecaster", "autogen.get_weather"), ("planner", "autogen.forecaster")]
    assert patched.agents.get("forecaster").by_kind == {"llm": 1, "tool": 1}
    assert patched.agents.get("planner").by_kind == {"llm": 1, "tool": 1}


async def test_a_caching_client_keeps_its_cache(patched: RecordingKernel) -> None:
    from autogen_ext.models.cache import ChatCompletionCache

    cached = ChatCompletionCache(openai_client())
    question = [UserMessage(content="What is 2 + 2?", source="user")]
    first = await cached.create(question)
    second = await cached.create(question)
    assert second.content == first.content and second.cached
    assert len(patched.llm_calls()) == 1  # the wrapper answered the repeat; its inner client went to the kernel once


class Verdict(BaseModel):
    verdict: str
    score: int


async def test_structured_output_and_json_mode(patched: RecordingKernel) -> None:
    client = openai_client()
    result = await client.create([SystemMessage(content="Judge."), UserMessage(content="Is it good?", source="user")], json_output=Verdict)
    assert Verdict.model_validate_json(result.content).score >= 1
    syscall = patched.llm_calls()[0][0]
    assert syscall.request.response_format.type == "json_schema"
    assert syscall.request.response_format.json_schema["name"] == "Verdict"

    agent = AssistantAgent("judge", model_client=client, output_content_type=Verdict)
    reply = (await agent.run(task="Judge this.")).messages[-1]
    assert isinstance(reply.content, Verdict)


async def test_client_defined_after_patch_is_routed_and_restored(sim_kernel: RecordingKernel) -> None:
    aios.patch("autogen", sim_kernel)
    try:

        class CannedClient(ReplayChatCompletionClient):
            async def create(self, messages, **kwargs):  # type: ignore[override]
                return CreateResult(finish_reason="stop", content="canned", usage=RequestUsage(0, 0), cached=False)

        routed = await CannedClient(["unused"]).create([UserMessage(content="hi", source="user")])
        assert routed.content != "canned" and routed.content == sim_kernel.llm_calls()[-1][1].content
    finally:
        aios.unpatch("autogen")
    own = await CannedClient(["unused"]).create([UserMessage(content="hi", source="user")])
    assert own.content == "canned"
    assert "__init_subclass__" not in ChatCompletionClient.__dict__


async def test_unpatch_restores_the_framework_exactly(sim_kernel: RecordingKernel) -> None:
    originals = {
        (BaseOpenAIChatCompletionClient, "create"): BaseOpenAIChatCompletionClient.__dict__["create"],
        (BaseOpenAIChatCompletionClient, "create_stream"): BaseOpenAIChatCompletionClient.__dict__["create_stream"],
        (ReplayChatCompletionClient, "create"): ReplayChatCompletionClient.__dict__["create"],
        (BaseTool, "run_json"): BaseTool.__dict__["run_json"],
        (BaseStreamTool, "run_json_stream"): BaseStreamTool.__dict__["run_json_stream"],
        (AssistantAgent, "on_messages"): AssistantAgent.__dict__["on_messages"],
        (AssistantAgent, "on_messages_stream"): AssistantAgent.__dict__["on_messages_stream"],
        (BaseGroupChat, "run_stream"): BaseGroupChat.__dict__["run_stream"],
    }

    aios.patch("autogen", sim_kernel)
    try:
        for (cls, name), original in originals.items():
            assert cls.__dict__[name] is not original, f"{cls.__name__}.{name} was not patched"
        replay = ReplayChatCompletionClient(["scripted answer"])
        patched_reply = await replay.create([UserMessage(content="hi", source="user")])
        assert patched_reply.content != "scripted answer" and len(sim_kernel.llm_calls()) == 1
    finally:
        aios.unpatch("autogen")

    for (cls, name), original in originals.items():
        assert cls.__dict__[name] is original, f"{cls.__name__}.{name} was not restored"
    replay = ReplayChatCompletionClient(["scripted answer"])
    assert (await replay.create([UserMessage(content="hi", source="user")])).content == "scripted answer"
    agent = AssistantAgent("after", model_client=ReplayChatCompletionClient(["offline reply"]))
    assert (await agent.run(task="hi")).messages[-1].content == "offline reply"
    assert len(sim_kernel.llm_calls()) == 1 and "after" not in sim_kernel.agents


async def test_patching_twice_is_harmless(sim_kernel: RecordingKernel) -> None:
    first = aios.patch("autogen", sim_kernel)
    create = BaseOpenAIChatCompletionClient.__dict__["create"]
    try:
        assert aios.patch("autogen", sim_kernel) is first
        assert BaseOpenAIChatCompletionClient.__dict__["create"] is create
        await openai_client().create([UserMessage(content="hi", source="user")])
        assert len(sim_kernel.llm_calls()) == 1
    finally:
        aios.unpatch("autogen")
    aios.unpatch("autogen")  # unpatching twice is harmless too
    assert not first.patched


def test_unsupported_version_fails_at_patch_time(sim_kernel: RecordingKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    create = BaseOpenAIChatCompletionClient.__dict__["create"]
    monkeypatch.setattr(ADAPTER, "supported", ">=0.9,<0.10")
    with pytest.raises(AIOSError, match=r"supports autogen-agentchat >=0\.9,<0\.10, but 0\.7\.\d+ is installed"):
        aios.patch("autogen", sim_kernel)
    assert not ADAPTER.patched and BaseOpenAIChatCompletionClient.__dict__["create"] is create


def test_unknown_options_are_refused(sim_kernel: RecordingKernel) -> None:
    with pytest.raises(ConfigError, match="unknown option.*temprature"):
        aios.patch("autogen", sim_kernel, temprature=0.5)
    assert not ADAPTER.patched


async def test_agent_options_choose_the_kernel_model_and_priority(sim_kernel: RecordingKernel) -> None:
    with aios.patched("autogen", sim_kernel, model="sim", priority=7, max_tokens=12):
        await AssistantAgent("prio", model_client=openai_client()).run(task="hi")
    [(syscall, response)] = sim_kernel.llm_calls()
    assert syscall.request.model == "sim" and syscall.priority == 7 and syscall.request.max_tokens == 12
    assert response.usage.completion_tokens <= 12
    assert not ADAPTER.patched


async def test_agent_scope_set_by_the_user_names_a_bare_client(patched: RecordingKernel) -> None:
    client = openai_client()
    with aios.agent_scope("researcher", program="study-1"):
        await client.create([UserMessage(content="hi", source="user")])
    await client.create([UserMessage(content="hi", source="user")])
    (first, _), (second, _) = patched.llm_calls()
    assert (first.agent, first.program) == ("researcher", "study-1")
    assert second.agent.startswith("autogen.OpenAIChatCompletionClient.")


async def test_kernel_on_the_frameworks_own_loop(tmp_path) -> None:
    """An async program may run the kernel on its own loop; tools then run on that loop directly."""
    kernel = RecordingKernel(cores=[fast_sim_core()], data_dir=tmp_path, entry_point_plugins=False, auto_register_agents=True)
    async with kernel:
        with aios.patched("autogen", kernel):

            async def echo(text: str) -> str:
                """Echo the text."""
                return f"echo: {text}"

            result = await AssistantAgent("local", model_client=openai_client(), tools=[echo]).run(task="echo this")
    execution = next(m for m in result.messages if isinstance(m, ToolCallExecutionEvent))
    assert execution.content[0].content.startswith("echo: ") and not execution.content[0].is_error
    assert kernel.agents.get("local").by_kind == {"llm": 1, "tool": 1}


def _llamacpp_kernel(tmp_path) -> RecordingKernel:
    # gemma_core fails (never skips) when llama-cpp-python or the model package is missing or broken
    return RecordingKernel(cores=[gemma_core()], data_dir=tmp_path, entry_point_plugins=False, auto_register_agents=True)


@pytest.mark.model
async def test_team_on_the_embedded_gemma_model(tmp_path) -> None:
    kernel = _llamacpp_kernel(tmp_path)
    async with kernel:
        with aios.patched("autogen", kernel, max_tokens=48):
            client = openai_client()
            team = RoundRobinGroupChat(
                [
                    AssistantAgent("poet", model_client=client, system_message="You write one short line of poetry."),
                    AssistantAgent("critic", model_client=client, system_message="You answer with one short sentence."),
                ],
                max_turns=2,
            )
            result = await team.run(task="Write about the sea.")
    assert [m.source for m in result.messages] == ["user", "poet", "critic"]
    assert all(isinstance(m.content, str) and m.content.strip() for m in result.messages[1:])
    for name in ("poet", "critic"):
        record = kernel.agents.get(name)
        assert record.by_kind == {"llm": 1} and record.prompt_tokens > 0 and 0 < record.completion_tokens <= 48
    assert {s.request.model for s, _ in kernel.llm_calls()} == {None}
    assert all(r.core == "llamacpp" for _, r in kernel.llm_calls())


# a client written against the protocol, not a subclass of any shipped client, to show the generic path
class TinyClient(ChatCompletionClient):
    async def create(self, messages, **kwargs):  # type: ignore[override]
        return CreateResult(finish_reason="stop", content="tiny", usage=RequestUsage(0, 0), cached=False)

    async def create_stream(self, messages, **kwargs):  # type: ignore[override]
        yield "ti"
        yield CreateResult(finish_reason="stop", content="tiny", usage=RequestUsage(0, 0), cached=False)

    async def close(self) -> None: ...
    def actual_usage(self) -> RequestUsage: return RequestUsage(0, 0)  # noqa: E704
    def total_usage(self) -> RequestUsage: return RequestUsage(0, 0)  # noqa: E704
    def count_tokens(self, messages, **kwargs) -> int: return 0  # noqa: E704
    def remaining_tokens(self, messages, **kwargs) -> int: return 1000  # noqa: E704

    @property
    def capabilities(self):  # type: ignore[override]
        return self.model_info

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(vision=False, function_calling=True, json_output=True, family="unknown", structured_output=True)


async def test_any_chat_completion_client_is_routed(patched: RecordingKernel) -> None:
    client = TinyClient()
    answer = await client.create([UserMessage(content="hi", source="user")])
    streamed = [x async for x in client.create_stream([UserMessage(content="hi", source="user")])]
    assert answer.content != "tiny" and streamed[-1].content != "tiny"
    assert [s.agent.startswith("autogen.TinyClient.") for s, _ in patched.llm_calls()] == [True, True]
    assert isinstance(patched.llm_calls()[0][0], LLMSyscall) and not patched.tool_calls()
    assert not isinstance(patched.llm_calls()[0][0], ToolSyscall)
