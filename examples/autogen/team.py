"""AutoGen's two-agent reflection team (from the AgentChat tutorial), scheduled by AIOS.

Run: python examples/autogen/team.py
The only AIOS line is `aios.patch("autogen", ...)`: every model call of both
agents becomes a kernel syscall answered by the embedded Gemma 3 270M model;
no API key is used and nothing leaves the machine.
"""

import asyncio

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_agentchat.ui import Console
from autogen_ext.models.openai import OpenAIChatCompletionClient

import aios

aios.patch("autogen", max_tokens=96)

# Create an OpenAI model client (AIOS answers its calls; the key is never sent).
model_client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="unused")

# Create the primary agent.
primary_agent = AssistantAgent(
    "primary",
    model_client=model_client,
    system_message="You are a helpful AI assistant.",
)

# Create the critic agent.
critic_agent = AssistantAgent(
    "critic",
    model_client=model_client,
    system_message="Provide constructive feedback. Respond with 'APPROVE' to when your feedbacks are addressed.",
)

# Define a termination condition that stops the task if the critic approves, or after 4 messages.
termination = TextMentionTermination("APPROVE") | MaxMessageTermination(4)

# Create a team with the primary and critic agents.
team = RoundRobinGroupChat([primary_agent, critic_agent], termination_condition=termination)


async def main() -> None:
    await Console(team.run_stream(task="Write a short poem about the fall season."))
    await model_client.close()


if __name__ == "__main__":
    asyncio.run(main())
