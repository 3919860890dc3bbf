"""How local models express tool calls and JSON output.

Hosted APIs return tool calls as structured fields; a small local model writes
text. Local cores (sim, llamacpp, transformers) therefore describe the offered
tools in the prompt and ask for one JSON object
``{"tool_calls": [{"name": ..., "arguments": {...}}]}``, which llama.cpp can
enforce with a grammar built from :func:`tool_call_schema`. This module is the
single definition of that contract on both sides: prompt and parser.
"""

from __future__ import annotations

import json
from typing import Any

from aios_core.syscalls import LLMRequest, Message, ToolCall, ToolSpec


def tool_call_schema(tools: list[ToolSpec], *, required: bool = True) -> dict[str, Any]:
    """JSON schema of the object a model must emit to call one or more of ``tools``."""
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    return {
        "type": "object",
        "properties": {"tool_calls": {"type": "array", "items": {"anyOf": variants}, "minItems": 1}},
        "required": ["tool_calls"],
    }


def tools_system_prompt(tools: list[ToolSpec], tool_choice: str) -> str:
    """Text appended to the system prompt that tells a local model how to call ``tools``."""
    lines = ["You can call these tools:"]
    for t in tools:
        lines.append(f"- {t.name}: {t.description or '(no description)'} Arguments (JSON schema): {json.dumps(t.parameters, separators=(',', ':'))}")
    lines.append(
        'To call tools, reply with only this JSON and nothing else: {"tool_calls": [{"name": "<tool>", "arguments": {...}}]}.'
    )
    if tool_choice == "required":
        lines.append("You must call a tool now.")
    elif tool_choice not in ("auto", "none"):
        lines.append(f"You must call the tool {tool_choice} now.")
    else:
        lines.append("If no tool is needed, answer in plain text.")
    return "\n".join(lines)


def with_tool_instructions(request: LLMRequest) -> list[Message]:
    """The request's messages with tool instructions merged into the system message (added if absent).

    Tool results and earlier assistant tool calls are rendered as text so that
    chat templates which know nothing of tools keep every turn.
    """
    messages: list[Message] = []
    for m in request.messages:
        if m.role == "tool":
            messages.append(Message(role="user", content=f"[tool result {m.name or m.tool_call_id}]\n{m.content or ''}"))
        elif m.role == "assistant" and m.tool_calls:
            calls = [{"name": c.name, "arguments": c.arguments} for c in m.tool_calls]
            text = (m.content + "\n" if m.content else "") + json.dumps({"tool_calls": calls})
            messages.append(Message(role="assistant", content=text))
        else:
            messages.append(m)
    if request.tools and request.tool_choice != "none":
        extra = tools_system_prompt(request.tools, request.tool_choice)
        if messages and messages[0].role == "system":
            messages[0] = Message(role="system", content=f"{messages[0].content}\n\n{extra}")
        else:
            messages.insert(0, Message(role="system", content=extra))
    return messages


def may_be_tool_call(text: str) -> bool:
    """While streaming: could ``text`` still turn into a tool-call object (so it must not be shown as content)?"""
    stripped = text.lstrip()
    return not stripped or stripped.startswith("{") or stripped.startswith("```")


def parse_tool_calls(text: str, tools: list[ToolSpec]) -> list[ToolCall] | None:
    """The tool calls in ``text``, or None when it is not a well-formed call of an offered tool."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body[4:] if body.startswith("json") else body
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(body[start : end + 1])
    except json.JSONDecodeError:
        return None
    raw = obj.get("tool_calls") if isinstance(obj, dict) else None
    if raw is None and isinstance(obj, dict) and "name" in obj:
        raw = [obj]
    if not isinstance(raw, list) or not raw:
        return None
    names = {t.name for t in tools}
    calls = []
    for item in raw:
        if not isinstance(item, dict) or item.get("name") not in names:
            return None
        args = item.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append(ToolCall(name=item["name"], arguments=args))
    return calls
