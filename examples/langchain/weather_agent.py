"""LangGraph's prebuilt ReAct agent with a LangChain tool, scheduled by AIOS.

Run: python examples/langchain/weather_agent.py
`aios.patch("langchain", ...)` is the only AIOS line: the chat model's calls
are answered by the embedded Gemma 3 270M model and the tool runs under the
kernel's tool manager; no API key is used.
"""

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import create_react_agent

import aios

aios.patch("langchain", max_tokens=96)


@tool
def get_weather(city: str) -> str:
    """Get weather for a given city."""
    return f"It's always sunny in {city}!"


model = ChatOpenAI(model="gpt-4o-mini", api_key="unused")  # AIOS answers; the key is never sent

agent = create_react_agent(model, tools=[get_weather], prompt="You are a helpful assistant")

if __name__ == "__main__":
    result = agent.invoke(
        {"messages": [{"role": "user", "content": "What is the weather in San Francisco?"}]},
        {"metadata": {"aios_agent": "weather-agent"}},  # optional: the name AIOS schedules and accounts it under
    )
    for message in result["messages"]:
        message.pretty_print()
