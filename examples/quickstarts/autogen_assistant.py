"""AutoGen AgentChat's quickstart shape (autogen-agentchat 0.7): an AssistantAgent with a function tool.

Follows the AgentChat 0.7 quickstart: ``OpenAIChatCompletionClient(model="gpt-4o")``,
an ``AssistantAgent`` with a Python function as its tool, ``reflect_on_tool_use``
and ``model_client_stream``, run with ``Console(agent.run_stream(task=...))``.
The one added line is ``aios.patch("autogen")``: no API key is needed, every model
call is answered by the AIOS kernel's model and the tool call runs under the
kernel's tool manager, as a scheduled syscall of the agent "timetable_agent".

Run: python examples/quickstarts/autogen_assistant.py
"""

import asyncio

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.ui import Console
from autogen_ext.models.openai import OpenAIChatCompletionClient

import aios

aios.patch("autogen")

model_client = OpenAIChatCompletionClient(model="gpt-4o")


async def next_train(station: str) -> str:
    """Look up the next train leaving from a station."""
    return f"The next train from {station} leaves at 14:05 from platform 3."


agent = AssistantAgent(
    name="timetable_agent",
    model_client=model_client,
    tools=[next_train],
    system_message="You help travellers with train times. Use the tool to look them up.",
    reflect_on_tool_use=True,
    model_client_stream=True,
)


async def main() -> None:
    await Console(agent.run_stream(task="When does the next train leave from Utrecht Centraal?"))
    await model_client.close()


if __name__ == "__main__":
    asyncio.run(main())
