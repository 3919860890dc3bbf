"""LangChain (langchain-core 1.x) and LangGraph running through the kernel (sim core; one test on the Gemma model).

These drive real LangChain objects: ChatOpenAI and langchain-core's own chat
models, ``@tool`` tools, callbacks, structured output, LangGraph's ReAct agent
and ToolNode. Only the network is gone: every model call is answered by the
kernel and every tool call admitted by its tool manager.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import jsonschema
import pytest

# installed by scripts/setup.sh: a missing or broken install fails these tests (the imports below), it does not skip them
from adapters_testkit import RecordingKernel
from aios.adapters.langchain.adapter import ADAPTER
from aios.adapters.langchain.tools import KernelToolError
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import BaseModel, ValidationError
from scripted_cores import gemma_core

import aios
from aios_core.errors import AIOSError, ToolError

pytestmark = pytest.mark.frameworks


def chat_openai(**options: Any) -> ChatOpenAI:
    # what LangChain's docs write; the key is never used: the kernel answers
    return ChatOpenAI(model="gpt-4o-mini", api_key="sk-unused", **options)


@pytest.fixture
def patched(sim_kernel):
    adapter = aios.patch("langchain", sim_kernel)
    try:
        yield sim_kernel
    finally:
        aios.unpatch("langchain")
    assert not adapter.patched


weather_calls: list[dict[str, Any]] = []


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    weather_calls.append({"city": city, "thread": threading.current_thread().name})
    return f"It is always sunny in {city}."


@pytest.fixture(autouse=True)
def _fresh_weather_calls():
    weather_calls.clear()


class Forecast(BaseModel):
    city: str
    degrees: int


# --------------------------------------------------------------------------- chat models


def test_invoke_stream_and_batch_are_kernel_syscalls(patched: RecordingKernel) -> None:
    llm = chat_openai(temperature=0.2, max_tokens=40)

    answer = llm.invoke([SystemMessage("You are terse."), HumanMessage("Hello!")])

    [(syscall, response)] = patched.llm_calls()
    assert answer.content == response.content and answer.content
    assert answer.usage_metadata["input_tokens"] == response.usage.prompt_tokens > 0
    assert answer.usage_metadata["output_tokens"] == response.usage.completion_tokens > 0
    assert answer.response_metadata["model_name"] == "gpt-4o-mini" and answer.response_metadata["finish_reason"] == "stop"
    assert [m.role for m in syscall.request.messages] == ["system", "user"]
    assert syscall.request.temperature == 0.2 and syscall.request.max_tokens == 40
    assert syscall.request.extra["framework_model"] == "gpt-4o-mini"

    chunks = list(llm.stream([SystemMessage("You are terse."), HumanMessage("Hello!")]))
    assert len([c for c in chunks if c.content]) > 1
    assert "".join(c.content for c in chunks) == answer.content  # the same request, the same deterministic answer
    streamed = chunks[0]
    for c in chunks[1:]:
        streamed += c
    assert streamed.usage_metadata["output_tokens"] == response.usage.completion_tokens

    replies = llm.batch(["one", "two", "three"])
    # batch runs the three calls concurrently: they are recorded in completion order
    assert sorted(r.content for r in replies) == sorted(r.content for _, r in patched.llm_calls()[2:])
    assert len(patched.llm_calls()) == 5
    record = patched.agents.get(syscall.agent)
    assert syscall.agent.startswith("langchain.ChatOpenAI.") and record.framework == "langchain"
    assert record.by_kind == {"llm": 5} and record.prompt_tokens > 0


async def test_async_invoke_stream_and_batch(patched: RecordingKernel) -> None:
    llm = chat_openai()
    answer = await llm.ainvoke("Hello there")
    chunks = [c async for c in llm.astream("Hello there")]
    assert "".join(c.content for c in chunks) == answer.content == patched.llm_calls()[0][1].content
    replies = await llm.abatch(["a", "b"])
    assert len(replies) == 2 and all(r.content for r in replies)
    assert len(patched.llm_calls()) == 4


def test_every_chat_model_class_is_routed(patched: RecordingKernel) -> None:
    generic = GenericFakeChatModel(messages=iter(["scripted"]))
    listed = FakeListChatModel(responses=["listed"])

    class EchoModel(BaseChatModel):  # defined after patching: routed as it is created
        @property
        def _llm_type(self) -> str:
            return "echo"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="echo"))])

    answers = [generic.invoke("hi").content, listed.invoke("hi").content, "".join(c.content for c in listed.stream("hi")), EchoModel().invoke("hi").content]
    assert answers == [r.content for _, r in patched.llm_calls()]
    assert not {"scripted", "listed", "echo"} & set(answers)
    names = [s.agent for s, _ in patched.llm_calls()]
    assert names[0].startswith("langchain.GenericFakeChatModel.") and names[3].startswith("langchain.EchoModel.")
    assert names[1] == names[2] != names[0]


def test_bind_tools_returns_schema_valid_tool_calls(patched: RecordingKernel) -> None:
    schema = convert_to_openai_tool(get_weather)["function"]["parameters"]
    for model in (chat_openai(), GenericFakeChatModel(messages=iter([]))):  # ChatOpenAI's bind_tools, and the generic one
        message = model.bind_tools([get_weather]).invoke("What is the weather in Paris?")
        [call] = message.tool_calls
        assert call["name"] == "get_weather" and call["id"]
        jsonschema.validate(call["args"], schema)
        syscall, response = patched.llm_calls()[-1]
        assert syscall.request.tools[0].name == "get_weather" and response.finish_reason == "tool_calls"
        assert call["args"] == response.tool_calls[0].arguments

    @tool
    def get_time(zone: str) -> str:
        """Get the time in a time zone."""
        return "noon"

    forced = chat_openai().bind_tools([get_weather, get_time], tool_choice="get_time").invoke("time?")
    assert [c["name"] for c in forced.tool_calls] == ["get_time"]
    assert patched.llm_calls()[-1][0].request.tool_choice == "get_time"

    chunks = list(chat_openai().bind_tools([get_weather]).stream("weather?"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert isinstance(merged, AIMessageChunk) and merged.tool_calls[0]["name"] == "get_weather"


def test_structured_output(patched: RecordingKernel) -> None:
    native = chat_openai().with_structured_output(Forecast).invoke("Forecast for Oslo")  # json_schema method: response_format
    generic = GenericFakeChatModel(messages=iter([])).with_structured_output(Forecast).invoke("Forecast for Rome")  # tool calling
    assert isinstance(native, Forecast) and isinstance(generic, Forecast)
    assert patched.llm_calls()[0][0].request.response_format.type == "json_schema"
    assert patched.llm_calls()[1][0].request.tool_choice == "required"


def test_callbacks_receive_the_kernels_tokens(patched: RecordingKernel) -> None:
    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []
            self.ended = 0

        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            self.tokens.append(token)

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            self.ended += 1

    handler = Tokens()
    text = "".join(c.content for c in chat_openai().stream("Count to five", config={"callbacks": [handler]}))
    assert "".join(handler.tokens) == text and len(handler.tokens) > 2 and handler.ended == 1


# --------------------------------------------------------------------------- identity


def test_agent_identity_from_scope_config_and_instance(patched: RecordingKernel) -> None:
    llm = chat_openai()
    with aios.agent_scope("researcher", program="study-7"):
        llm.invoke("a")
    llm.with_config(run_name="planner").invoke("b")
    llm.invoke("c", config={"metadata": {"aios_agent": "critic", "aios_program": "review-1"}})
    list(llm.stream("d", config={"metadata": {"aios_agent": "critic"}}))
    llm.invoke("e")
    chat_openai().invoke("f")
    who = [(s.agent, s.program) for s, _ in patched.llm_calls()]
    assert who[:4] == [("researcher", "study-7"), ("planner", "planner"), ("critic", "review-1"), ("critic", "critic")]
    assert who[4][0].startswith("langchain.ChatOpenAI.") and who[5][0].startswith("langchain.ChatOpenAI.") and who[4] != who[5]


# --------------------------------------------------------------------------- tools


def test_tool_invoke_goes_through_the_tool_manager(patched: RecordingKernel) -> None:
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")
    marker.set("caller")

    @tool
    def whoami() -> str:
        """Report the caller's context."""
        return marker.get()

    assert get_weather.invoke({"city": "Rome"}) == "It is always sunny in Rome."
    message = get_weather.invoke({"name": "get_weather", "args": {"city": "Oslo"}, "id": "call-1", "type": "tool_call"})
    assert isinstance(message, ToolMessage) and message.tool_call_id == "call-1" and message.content == "It is always sunny in Oslo."
    assert whoami.invoke({}) == "caller"
    assert [c["city"] for c in weather_calls] == ["Rome", "Oslo"]
    assert all(c["thread"].startswith("aios-framework-tool") for c in weather_calls)
    names = [s.calls[0].name for s, _ in patched.tool_calls()]
    assert names == ["langchain.get_weather", "langchain.get_weather", "langchain.whoami"]
    assert all(r[0].ok for _, r in patched.tool_calls())
    assert patched.agents.get("langchain.tools").by_kind == {"tool": 3}


def test_tool_artifacts_come_back_intact(patched: RecordingKernel) -> None:
    payload = {"rows": [1, 2, 3], "source": object()}

    @tool(response_format="content_and_artifact")
    def query(sql: str) -> tuple[str, dict]:
        """Run a query."""
        return "3 rows", payload

    message = query.invoke({"name": "query", "args": {"sql": "select"}, "id": "q1", "type": "tool_call"})
    assert message.content == "3 rows" and message.artifact is payload


def test_schema_invalid_arguments_are_refused_with_a_clear_error(patched: RecordingKernel) -> None:
    with pytest.raises(ValidationError) as info:
        get_weather.invoke({"city": 3})
    assert "3 is not of type 'string'" in str(info.value) and info.value.errors()[0]["loc"] == ("city",)
    assert isinstance(info.value.__cause__, KernelToolError) and isinstance(info.value.__cause__, ToolError)
    assert "invalid arguments for langchain.get_weather" in info.value.__cause__.message
    assert weather_calls == [] and patched.managers.tools.stats["invalid"] == 1

    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    bad_call = AIMessage("", tool_calls=[{"name": "get_weather", "args": {"town": "Rome"}, "id": "c9", "type": "tool_call"}])
    reply = graph.compile().invoke({"messages": [bad_call]})["messages"][-1]
    # as without AIOS, LangGraph turns the refusal into a message for the model instead of failing the run
    assert isinstance(reply, ToolMessage) and reply.tool_call_id == "c9"
    assert reply.status == "error" and "'city' is a required property" in reply.content and weather_calls == []


async def test_async_tools_run_on_the_callers_loop(patched: RecordingKernel) -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    @tool
    async def fetch(url: str) -> str:
        """Fetch a URL."""
        seen.append(asyncio.get_running_loop())
        return f"<html>{url}</html>"

    assert await fetch.ainvoke({"url": "http://example.test"}) == "<html>http://example.test</html>"
    assert await get_weather.ainvoke({"city": "Lima"}) == "It is always sunny in Lima."
    assert seen == [asyncio.get_running_loop()]
    assert [s.calls[0].name for s, _ in patched.tool_calls()] == ["langchain.fetch", "langchain.get_weather"]


def test_tool_timeout_is_the_kernels(sim_kernel: RecordingKernel) -> None:
    release = threading.Event()

    @tool
    def slow(seconds: int) -> str:
        """Wait."""
        release.wait(10)
        return "done"

    with aios.patched("langchain", sim_kernel, tool_timeout=0.2), pytest.raises(KernelToolError, match=r"did not finish within 0\.2 s"):
        slow.invoke({"seconds": 5})
    release.set()


# --------------------------------------------------------------------------- agent loops


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_langgraph_react_agent_runs_through_the_kernel(patched: RecordingKernel) -> None:
    from langgraph.prebuilt import create_react_agent

    agent = create_react_agent(chat_openai(), [get_weather], prompt="You are a weather bot.")
    result = agent.invoke(
        {"messages": [("user", "What is the weather in San Francisco?")]},
        {"metadata": {"aios_agent": "weather-bot", "aios_program": "trip-42"}},
    )

    _human, call, observation, final = result["messages"]
    assert isinstance(call, AIMessage) and call.tool_calls[0]["name"] == "get_weather"
    city = call.tool_calls[0]["args"]["city"]
    assert isinstance(observation, ToolMessage) and observation.content == f"It is always sunny in {city}."
    assert isinstance(final, AIMessage) and final.content and not final.tool_calls
    assert final.content == patched.llm_calls()[-1][1].content
    assert [c["city"] for c in weather_calls] == [city]
    assert {(s.agent, s.program) for s, _ in patched.served} == {("weather-bot", "trip-42")}
    assert patched.agents.get("weather-bot").by_kind == {"llm": 2, "tool": 1}
    assert patched.llm_calls()[1][0].request.messages[-1].role == "tool"


async def test_hand_written_async_tool_loop(patched: RecordingKernel) -> None:
    """The loop LangChain's docs show for tool calling, on ainvoke/ainvoke."""
    llm = chat_openai().bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("Weather in Kyoto?")]
    with aios.agent_scope("looper"):
        for _ in range(3):
            reply = await llm.ainvoke(messages)
            messages.append(reply)
            if not reply.tool_calls:
                break
            for call in reply.tool_calls:
                messages.append(await get_weather.ainvoke(call))
    assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert patched.agents.get("looper").by_kind == {"llm": 2, "tool": 1}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_langgraph_message_streaming_sees_kernel_tokens(patched: RecordingKernel) -> None:
    from langgraph.prebuilt import create_react_agent

    agent = create_react_agent(chat_openai(), [get_weather])
    tokens = [chunk.content for chunk, meta in agent.stream({"messages": [("user", "weather in Oslo?")]}, stream_mode="messages")
              if isinstance(chunk, AIMessageChunk) and meta.get("langgraph_node") == "agent"]
    assert "".join(tokens) == patched.llm_calls()[-1][1].content and len([t for t in tokens if t]) > 1


# --------------------------------------------------------------------------- patch lifecycle


def test_unpatch_restores_the_framework_exactly(sim_kernel: RecordingKernel) -> None:
    originals = {
        (BaseChatModel, "generate"): BaseChatModel.__dict__["generate"],
        (BaseChatModel, "stream"): BaseChatModel.__dict__["stream"],
        (BaseChatOpenAI, "_generate"): BaseChatOpenAI.__dict__["_generate"],
        (BaseChatOpenAI, "_agenerate"): BaseChatOpenAI.__dict__["_agenerate"],
        (ChatOpenAI, "_stream"): ChatOpenAI.__dict__["_stream"],
        (GenericFakeChatModel, "_generate"): GenericFakeChatModel.__dict__["_generate"],
        (FakeListChatModel, "_stream"): FakeListChatModel.__dict__["_stream"],
        (BaseTool, "run"): BaseTool.__dict__["run"],
        (BaseTool, "arun"): BaseTool.__dict__["arun"],
    }
    added = [(GenericFakeChatModel, "bind_tools"), (GenericFakeChatModel, "_astream"), (BaseChatModel, "__pydantic_init_subclass__")]
    assert not any(name in cls.__dict__ for cls, name in added)

    with aios.patched("langchain", sim_kernel):
        assert all(cls.__dict__[name] is not original for (cls, name), original in originals.items())
        assert GenericFakeChatModel(messages=iter(["scripted"])).invoke("hi").content != "scripted"

    assert all(cls.__dict__[name] is original for (cls, name), original in originals.items())
    assert not any(name in cls.__dict__ for cls, name in added)
    calls = len(sim_kernel.served)
    assert GenericFakeChatModel(messages=iter(["scripted"])).invoke("hi").content == "scripted"
    assert [c.content for c in FakeListChatModel(responses=["abc"]).stream("hi")] == ["a", "b", "c"]
    with pytest.raises(NotImplementedError):
        GenericFakeChatModel(messages=iter([])).bind_tools([get_weather])
    assert get_weather.invoke({"city": "Bern"}) == "It is always sunny in Bern."
    with pytest.raises(ValidationError):  # LangChain's own validation again
        get_weather.invoke({"city": ["not", "a", "string"]})
    assert len(sim_kernel.served) == calls


def test_patch_twice_version_check_and_options(sim_kernel: RecordingKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    original = BaseChatOpenAI.__dict__["_generate"]
    first = aios.patch("langchain", sim_kernel)
    generate = BaseChatOpenAI.__dict__["_generate"]
    try:
        assert aios.patch("langchain", sim_kernel) is first and BaseChatOpenAI.__dict__["_generate"] is generate
        assert aios.patch("langchain") is first  # no kernel named: the patched one stays
        with pytest.raises(AIOSError, match=r"already patched onto another kernel; call aios.unpatch\('langchain'\) first"):
            aios.patch("langchain", object())
        chat_openai().invoke("hi")
        assert len(sim_kernel.llm_calls()) == 1
    finally:
        aios.unpatch("langchain")
    monkeypatch.setattr(ADAPTER, "supported", ">=2,<3")
    with pytest.raises(AIOSError, match=r"supports langchain-core >=2,<3, but 1\.\d+\.\d+ is installed"):
        aios.patch("langchain", sim_kernel)
    monkeypatch.undo()
    with pytest.raises(AIOSError, match="unknown option"):
        aios.patch("langchain", sim_kernel, modle="sim")
    assert not ADAPTER.patched and BaseChatOpenAI.__dict__["_generate"] is original


@pytest.mark.model
def test_chat_model_and_tool_call_on_the_embedded_gemma_model(tmp_path) -> None:
    # gemma_core fails (never skips) when llama-cpp-python or the model package is missing or broken
    kernel = RecordingKernel(cores=[gemma_core()], data_dir=tmp_path, entry_point_plugins=False, auto_register_agents=True).start()
    try:
        with aios.patched("langchain", kernel, max_tokens=48):
            llm = chat_openai(temperature=0)
            answer = llm.invoke("What is the capital of France? Answer in one word.")
            streamed = "".join(c.content for c in llm.stream("What is the capital of France? Answer in one word."))
            forced = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    finally:
        kernel.stop()
    assert answer.content.strip() and streamed.strip()
    [call] = forced.tool_calls  # the core's grammar makes the forced call schema-valid
    jsonschema.validate(call["args"], convert_to_openai_tool(get_weather)["function"]["parameters"])
    record = kernel.agents.get(kernel.llm_calls()[0][0].agent)
    assert record.by_kind == {"llm": 3} and record.prompt_tokens > 0 and record.completion_tokens > 0
    assert {r.core for _, r in kernel.llm_calls()} == {"llamacpp"}

