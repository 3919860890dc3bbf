"""LangChain's chat-model types <-> the kernel's LLMRequest / LLMResponse."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aios.adapters.shared.names import safe_tool_name
from aios.adapters.shared.schemas import inline_local_refs
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from aios_core.syscalls import LLMResponse, Message, ResponseFormat, ToolCall, ToolSpec

_CHAT_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "ai": "assistant", "system": "system", "developer": "system"}


def text_of(message: BaseMessage) -> str:
    """The text of a message (content blocks joined; non-text blocks such as images are left out)."""
    if isinstance(message.content, str):
        return message.content
    return str(message.text)


def to_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    out: list[Message] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append(Message(role="system", content=text_of(m)))
        elif isinstance(m, HumanMessage):
            out.append(Message(role="user", content=text_of(m), name=m.name))
        elif isinstance(m, AIMessage):
            calls = [
                ToolCall(id=c.get("id") or f"call_{uuid.uuid4().hex[:12]}", name=safe_tool_name(c["name"]), arguments=c.get("args") or {})
                for c in m.tool_calls
            ]
            out.append(Message(role="assistant", content=text_of(m) if (text_of(m) or not calls) else None, tool_calls=calls or None, name=m.name))
        elif isinstance(m, ToolMessage):
            out.append(Message(role="tool", content=text_of(m), name=m.name, tool_call_id=m.tool_call_id or "call"))
        elif isinstance(m, FunctionMessage):
            out.append(Message(role="tool", content=text_of(m), name=m.name, tool_call_id=m.name))
        elif isinstance(m, ChatMessage):
            out.append(Message(role=_CHAT_ROLES.get(m.role.lower(), "user"), content=text_of(m)))  # type: ignore[arg-type]
        else:
            out.append(Message(role="user", content=text_of(m)))
    return out


def _function_of(tool: Any) -> Mapping[str, Any]:
    if isinstance(tool, Mapping):
        if tool.get("type") == "function" and isinstance(tool.get("function"), Mapping):
            return tool["function"]  # type: ignore[no-any-return]
        if "name" in tool and ("parameters" in tool or "input_schema" in tool):  # flat / Anthropic shapes
            return {"name": tool["name"], "description": tool.get("description", ""), "parameters": tool.get("parameters") or tool.get("input_schema")}
    return convert_to_openai_tool(tool)["function"]  # type: ignore[no-any-return]


def to_tool_specs(tools: Sequence[Any]) -> list[ToolSpec]:
    specs = []
    for tool in tools:
        fn = _function_of(tool)
        parameters = dict(fn.get("parameters") or {"type": "object", "properties": {}})
        parameters.setdefault("type", "object")
        specs.append(ToolSpec(name=fn["name"], description=fn.get("description") or "", parameters=parameters))
    return specs


def to_tool_choice(tool_choice: Any) -> str:
    """LangChain's many spellings of tool_choice ("any", True, {"type": "function", ...}) as the kernel's."""
    if tool_choice is None or tool_choice is False:
        return "auto"
    if tool_choice is True:
        return "required"
    if isinstance(tool_choice, str):
        return {"any": "required"}.get(tool_choice, tool_choice)
    if isinstance(tool_choice, Mapping):
        if isinstance(tool_choice.get("function"), Mapping):
            return str(tool_choice["function"]["name"])
        if tool_choice.get("name"):
            return str(tool_choice["name"])
        kind = tool_choice.get("type")
        if kind in ("any", "required"):
            return "required"
        if kind in ("auto", "none"):
            return str(kind)
    raise ValueError(f"unsupported tool_choice {tool_choice!r}")


def to_response_format(response_format: Any) -> ResponseFormat | None:
    if response_format is None:
        return None
    if isinstance(response_format, Mapping):
        kind = response_format.get("type", "text")
        if kind == "json_schema":
            wrapper = dict(response_format.get("json_schema") or {})
            if isinstance(wrapper.get("schema"), dict):
                wrapper["schema"] = inline_local_refs(wrapper["schema"])
            return ResponseFormat(type="json_schema", json_schema=wrapper)
        return ResponseFormat(type=kind)
    if isinstance(response_format, type) and hasattr(response_format, "model_json_schema"):
        return ResponseFormat(type="json_schema", json_schema={"name": response_format.__name__, "schema": inline_local_refs(response_format.model_json_schema())})
    raise ValueError(f"unsupported response_format {response_format!r}")


def parse_target(response_format: Any) -> type | None:
    """The pydantic class a ``response_format`` names: OpenAI-style models return the parsed object with the message."""
    if isinstance(response_format, type) and hasattr(response_format, "model_validate_json"):
        return response_format
    return None


def _parsed(response: LLMResponse, target: type | None) -> dict[str, Any]:
    if target is None or response.tool_calls or not response.content:
        return {}
    try:
        return {"parsed": target.model_validate_json(response.content)}  # type: ignore[attr-defined]
    except ValueError:
        return {}  # as OpenAI: no "parsed" when the output does not fit; LangChain reports the raw message


def _usage(response: LLMResponse) -> dict[str, Any]:
    u = response.usage
    usage: dict[str, Any] = {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens, "total_tokens": u.total_tokens}
    if u.cached_tokens:
        usage["input_token_details"] = {"cache_read": u.cached_tokens}
    return usage


def response_metadata(response: LLMResponse, model_name: str) -> dict[str, Any]:
    return {
        "finish_reason": response.finish_reason,
        "model_name": model_name,
        "aios_core": response.core,
        "aios_syscall": response.syscall_id,
    }


def to_ai_message(response: LLMResponse, model_name: str, parse_as: type | None = None) -> AIMessage:
    return AIMessage(
        content=response.content or "",
        additional_kwargs=_parsed(response, parse_as),
        tool_calls=[{"name": c.name, "args": c.arguments, "id": c.id, "type": "tool_call"} for c in response.tool_calls],
        usage_metadata=_usage(response),  # type: ignore[arg-type]
        response_metadata=response_metadata(response, model_name),
    )


def to_chat_result(response: LLMResponse, model_name: str, parse_as: type | None = None) -> ChatResult:
    u = response.usage
    return ChatResult(
        generations=[ChatGeneration(message=to_ai_message(response, model_name, parse_as), generation_info={"finish_reason": response.finish_reason})],
        llm_output={
            "token_usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens},
            "model_name": model_name,
        },
    )


def delta_chunk(text: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(content=text))


def final_chunk(response: LLMResponse, model_name: str, parse_as: type | None = None) -> ChatGenerationChunk:
    """The last streamed chunk: tool calls, usage and finish reason (the text came in the deltas)."""
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            additional_kwargs=_parsed(response, parse_as),
            tool_call_chunks=[
                {"name": c.name, "args": json.dumps(c.arguments), "id": c.id, "index": i, "type": "tool_call_chunk"}
                for i, c in enumerate(response.tool_calls)
            ],
            usage_metadata=_usage(response),  # type: ignore[arg-type]
            response_metadata=response_metadata(response, model_name),
        ),
        generation_info={"finish_reason": response.finish_reason},
    )
