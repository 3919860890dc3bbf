"""LangGraph's quickstart shape (langgraph 1.x, langchain-openai 1.x): a ReAct agent graph with a tool.

Follows the LangGraph quickstart's "chatbot with tools": a ``StateGraph`` over
a ``messages`` state (``add_messages``), a model node calling
``ChatOpenAI(model="gpt-4o-mini").bind_tools(tools)``, a prebuilt ``ToolNode``,
``tools_condition`` to loop between them (reason, act, observe), compiled and
run with ``graph.invoke``. The one added line is ``aios.patch("langchain")``:
no API key is needed, the model calls are answered by the AIOS kernel and the
tool runs under its tool manager, both scheduled under the model's agent.

Run: python examples/quickstarts/langgraph_react.py
"""

from typing import Annotated

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from typing_extensions import TypedDict

import aios

aios.patch("langchain")


class State(TypedDict):
    messages: Annotated[list, add_messages]


@tool
def get_opening_hours(museum: str) -> str:
    """Get the opening hours of a museum."""
    return f"{museum} is open from 10:00 to 18:00, closed on Mondays."


tools = [get_opening_hours]
llm = ChatOpenAI(model="gpt-4o-mini")
llm_with_tools = llm.bind_tools(tools)


def chatbot(state: State):
    return {"messages": [llm_with_tools.invoke(state["messages"])]}


graph_builder = StateGraph(State)
graph_builder.add_node("chatbot", chatbot)
graph_builder.add_node("tools", ToolNode(tools=tools))
graph_builder.add_conditional_edges("chatbot", tools_condition)
graph_builder.add_edge("tools", "chatbot")
graph_builder.add_edge(START, "chatbot")
graph = graph_builder.compile()

result = graph.invoke({"messages": [{"role": "user", "content": "When is the Rijksmuseum open?"}]})
for message in result["messages"]:
    message.pretty_print()
