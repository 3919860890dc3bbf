"""LangChain (langchain-core 1.x, and LangGraph on top of it) through the AIOS kernel: ``aios.patch("langchain")``.

Every chat model's generate and stream paths become LLM syscalls (tool calls
of ``bind_tools`` come back as ``AIMessage.tool_calls``), and every
``BaseTool`` invocation a tool syscall under the tool manager. LangChain's own
machinery (callbacks, caching, tracing, output parsers, LangGraph's message
streaming) keeps working because only the innermost model call is replaced.
"""

from aios.adapters.langchain.adapter import LangChainAdapter

__all__ = ["LangChainAdapter"]
