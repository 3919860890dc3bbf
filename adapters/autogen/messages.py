"""AutoGen's model-client types <-> the kernel's LLMRequest / LLMResponse."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aios.adapters.shared.names import safe_tool_name
from aios.adapters.shared.schemas import inline_local_refs
from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResultMessage,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from pydantic import BaseModel

from aios_core.syscalls import LLMResponse, Message, ResponseFormat, ToolCall, ToolSpec

#: AutoGen create args that map onto LLMRequest fields
_GENERATION_ARGS = ("temperature", "top_p", "seed", "stop")

#: kernel finish reasons -> AutoGen's FinishReasons
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "function_calls", "cancelled": "unknown", "error": "unknown"}


def _text(content: Any) -> str:
    """A user message's content as text; images (which the kernel's cores do not take) become a marker."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        parts.append(part if isinstance(part, str) else "[image]")
    return "\n".join(parts)


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw and raw.strip() else {}
    except json.JSONDecodeError:
        return {"_unparsed": raw}
    return value if isinstance(value, dict) else {"_value": value}


def to_messages(messages: Sequence[Any]) -> list[Message]:
    out: list[Message] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append(Message(role="system", content=m.content))
        elif isinstance(m, UserMessage):
            out.append(Message(role="user", content=_text(m.content), name=m.source or None))
        elif isinstance(m, AssistantMessage):
            if isinstance(m.content, str):
                out.append(Message(role="assistant", content=m.content, name=m.source or None))
            elif m.content:
                calls = [
                    ToolCall(id=c.id or f"call_{uuid.uuid4().hex[:12]}", name=safe_tool_name(c.name), arguments=_arguments(c.arguments))
                    for c in m.content
                ]
                out.append(Message(role="assistant", content=m.thought, tool_calls=calls, name=m.source or None))
            else:
                out.append(Message(role="assistant", content=m.thought or "", name=m.source or None))
        elif isinstance(m, FunctionExecutionResultMessage):
            for i, r in enumerate(m.content):
                out.append(Message(role="tool", content=r.content, name=r.name or None, tool_call_id=r.call_id or f"call_{i}"))
        else:
            raise TypeError(f"unsupported AutoGen message type {type(m).__name__}")
    return out


def to_tool_specs(tools: Sequence[Any]) -> list[ToolSpec]:
    specs = []
    for tool in tools:
        schema: Mapping[str, Any] = tool if isinstance(tool, Mapping) else tool.schema
        parameters = dict(schema.get("parameters") or {"type": "object", "properties": {}})
        parameters.setdefault("type", "object")
        specs.append(ToolSpec(name=schema["name"], description=schema.get("description", "") or "", parameters=parameters))
    return specs


def to_tool_choice(tool_choice: Any) -> str:
    if isinstance(tool_choice, str):
        return tool_choice
    return str(tool_choice.name)


def to_response_format(json_output: Any) -> ResponseFormat | None:
    if json_output is None or json_output is False:
        return None
    if json_output is True:
        return ResponseFormat(type="json_object")
    if isinstance(json_output, type) and issubclass(json_output, BaseModel):
        return ResponseFormat(type="json_schema", json_schema={"name": json_output.__name__, "schema": inline_local_refs(json_output.model_json_schema())})
    raise TypeError(f"json_output must be a bool or a pydantic model class, got {json_output!r}")


def generation_fields(create_args: Mapping[str, Any]) -> dict[str, Any]:
    """LLMRequest fields from AutoGen create args (the client's own, overridden by extra_create_args)."""
    fields: dict[str, Any] = {k: create_args[k] for k in _GENERATION_ARGS if create_args.get(k) is not None}
    max_tokens = create_args.get("max_completion_tokens") or create_args.get("max_tokens")
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    return fields


def to_create_result(response: LLMResponse) -> CreateResult:
    usage = RequestUsage(prompt_tokens=response.usage.prompt_tokens, completion_tokens=response.usage.completion_tokens)
    if response.tool_calls:
        calls = [FunctionCall(id=c.id, name=c.name, arguments=json.dumps(c.arguments)) for c in response.tool_calls]
        return CreateResult(finish_reason="function_calls", content=calls, usage=usage, cached=False, thought=response.content or None)
    finish = _FINISH.get(response.finish_reason, "unknown")
    if finish == "function_calls":
        finish = "stop"
    return CreateResult(finish_reason=finish, content=response.content or "", usage=usage, cached=False)  # type: ignore[arg-type]
