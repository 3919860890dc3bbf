"""AutoGen (autogen-agentchat / autogen-core / autogen-ext 0.7) through the AIOS kernel: ``aios.patch("autogen")``.

Every ``ChatCompletionClient``'s ``create`` / ``create_stream`` becomes an LLM
syscall, every ``BaseTool.run_json`` (what ``AssistantAgent`` and workbenches
call) a tool syscall under the tool manager, and each AgentChat agent's turn
runs as that agent (its name) within its team run (the program).
"""

from aios.adapters.autogen.adapter import AutoGenAdapter

__all__ = ["AutoGenAdapter"]
