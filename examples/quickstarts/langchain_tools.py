"""LangChain's tool-calling quickstart shape (langchain-core 1.x, langchain-openai 1.x): bind_tools, then pass results back.

Follows LangChain's "tool calling" how-to: ``ChatOpenAI(model="gpt-4o-mini")``,
tools defined with ``@tool``, ``llm.bind_tools([...])``, one ``invoke`` that
returns ``ai_msg.tool_calls``, each call run with ``tool.invoke(tool_call)``
(which returns a ``ToolMessage``), and a second ``invoke`` with the results.
The one added line is ``aios.patch("langchain")``: no API key is needed, the
model calls are answered by the AIOS kernel and the tool calls run under its
tool manager, scheduled under the model's agent.

Run: python examples/quickstarts/langchain_tools.py
"""

from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

import aios

aios.patch("langchain")


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


llm = ChatOpenAI(model="gpt-4o-mini")
llm_with_tools = llm.bind_tools([multiply, add])

messages = [HumanMessage("What is 6 times 7?")]
ai_msg = llm_with_tools.invoke(messages)
messages.append(ai_msg)

for tool_call in ai_msg.tool_calls:
    selected_tool = {"add": add, "multiply": multiply}[tool_call["name"].lower()]
    tool_msg = selected_tool.invoke(tool_call)
    print(f"{tool_call['name']}({tool_call['args']}) -> {tool_msg.content}")
    messages.append(tool_msg)

print(llm_with_tools.invoke(messages).content)
