"""AutoGen AgentChat's team quickstart shape (autogen-agentchat 0.7): two agents in a RoundRobinGroupChat.

Follows the AgentChat 0.7 teams tutorial: one ``OpenAIChatCompletionClient``
shared by a writer and a reviewer ``AssistantAgent``, a
``RoundRobinGroupChat`` that stops on ``TextMentionTermination("APPROVE")`` or
after ``MaxMessageTermination(5)``, run with ``Console(team.run_stream(task=...))``.
The one added line is ``aios.patch("autogen")``: no API key is needed, and each
agent's model calls are scheduled by the kernel under the agent's own name.

Run: python examples/quickstarts/autogen_team.py
"""

import asyncio

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_agentchat.ui import Console
from autogen_ext.models.openai import OpenAIChatCompletionClient

import aios

aios.patch("autogen")

model_client = OpenAIChatCompletionClient(model="gpt-4o-mini")

writer = AssistantAgent(
    "writer",
    model_client=model_client,
    system_message="You write short product descriptions.",
)
reviewer = AssistantAgent(
    "reviewer",
    model_client=model_client,
    system_message="You review product descriptions. Reply with 'APPROVE' once the description is clear.",
)

termination = TextMentionTermination("APPROVE") | MaxMessageTermination(5)
team = RoundRobinGroupChat([writer, reviewer], termination_condition=termination)


async def main() -> None:
    await Console(team.run_stream(task="Describe a reusable water bottle in two sentences."))
    await model_client.close()


if __name__ == "__main__":
    asyncio.run(main())
