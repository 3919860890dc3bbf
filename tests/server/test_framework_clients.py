"""Frameworks' own OpenAI model clients, unchanged, pointed at the kernel: LangChain's ChatOpenAI and AutoGen's client."""

from __future__ import annotations

import asyncio
import json

# langchain_openai and autogen_ext are installed by scripts/setup.sh: a missing or broken install is a collection error, not a skip
import langchain_openai
import pytest
from autogen_ext.models import openai as openai_ext
from pydantic import BaseModel

pytestmark = pytest.mark.frameworks


class Forecast(BaseModel):
    city: str
    days: int


def get_weather(city: str, days: int) -> str:
    """Weather forecast of a city for a number of days."""
    return f"{city}: sunny for {days} days"


def test_langchain_chat_openai(server):
    llm = langchain_openai.ChatOpenAI(
        model="sim", base_url=server.url + "/v1", api_key=server.register("lc-agent"), max_retries=0,
        default_headers={"X-AIOS-Program": "lc-run-1"},
    )
    reply = llm.invoke("hello")
    assert reply.content and reply.usage_metadata["output_tokens"] > 0
    streamed = "".join(chunk.content for chunk in llm.stream("hello"))
    assert streamed == reply.content
    call = llm.bind_tools([get_weather]).invoke("weather in Oslo?")
    assert call.tool_calls[0]["name"] == "get_weather" and set(call.tool_calls[0]["args"]) == {"city", "days"}
    forecast = llm.with_structured_output(Forecast).invoke("forecast as JSON")
    assert isinstance(forecast, Forecast)

    async def amain() -> list[str]:
        replies = await asyncio.gather(*(llm.ainvoke(f"q{i}") for i in range(5)))
        return [r.content for r in replies]

    assert all(asyncio.run(amain()))
    agent = next(a for a in server.stats()["agents"] if a["name"] == "lc-agent")
    assert agent["syscalls"] == 9 and agent["failed"] == 0


def test_autogen_openai_chat_completion_client_and_assistant_agent(server):
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core.models import CreateResult, UserMessage
    from autogen_core.tools import FunctionTool

    model_info = {"vision": False, "function_calling": True, "json_output": True, "family": "unknown", "structured_output": True}
    client = openai_ext.OpenAIChatCompletionClient(
        model="sim", base_url=server.url + "/v1", api_key=server.register("ag-agent"), model_info=model_info, max_retries=0
    )
    tool = FunctionTool(get_weather, description="weather forecast")

    async def main() -> None:
        result = await client.create([UserMessage(content="hello", source="user")])
        assert isinstance(result.content, str) and result.content and result.usage.completion_tokens > 0
        pieces = [p async for p in client.create_stream([UserMessage(content="hello", source="user")])]
        assert isinstance(pieces[-1], CreateResult) and "".join(p for p in pieces[:-1] if isinstance(p, str)) == pieces[-1].content
        called = await client.create([UserMessage(content="weather in Rome?", source="user")], tools=[tool])
        assert called.finish_reason == "function_calls" and called.content[0].name == "get_weather"
        assert set(json.loads(called.content[0].arguments)) == {"city", "days"}
        agent = AssistantAgent("weatherbot", model_client=client, tools=[tool])
        run = await agent.run(task="What is the weather in Rome?")
        assert any("sunny for" in str(getattr(m, "content", "")) for m in run.messages)
        await client.close()

    asyncio.run(main())
    agent = next(a for a in server.stats()["agents"] if a["name"] == "ag-agent")
    assert agent["syscalls"] >= 4 and agent["failed"] == 0
