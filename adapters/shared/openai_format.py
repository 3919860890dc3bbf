"""OpenAI chat-format pieces as the kernel's types, for frameworks that speak that format to their models.

MetaGPT's providers and Open-Interpreter's ``llm.completions`` both hand over
OpenAI-style messages, ``tools`` and ``tool_choice``, and both expect OpenAI's
finish reasons back; the translations live here once, so the two adapters
cannot drift apart in how they read the same format.
"""

from __future__ import annotations

import logging
from typing import Any

from aios_core.syscalls import ToolSpec

log = logging.getLogger(__name__)

#: the kernel's finish reasons as OpenAI's (anything else, e.g. a cancelled call, reads as "stop")
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def content_text(content: Any, framework: str) -> str:
    """A message's text; of multimodal parts (``[{"type": "text", ...}, {"type": "image_url", ...}]``) the text ones.

    Kernel cores take text only, so image parts are dropped, with a warning
    that names ``framework`` (the user sees which adapter lost them).
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) < len(content):
            log.warning("%s: image parts of a message are dropped; kernel cores take text only", framework)
        return "\n".join(parts)
    return str(content)


def to_tool_specs(tools: list[dict[str, Any]]) -> list[ToolSpec]:
    """OpenAI ``tools`` (``{"type": "function", "function": {...}}``, or the bare function) as tool specs."""
    specs = []
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, dict) else {}
        specs.append(
            ToolSpec(
                name=fn["name"],
                description=fn.get("description", ""),
                parameters=fn.get("parameters") or {"type": "object", "properties": {}},
            )
        )
    return specs


def to_tool_choice(choice: Any) -> str:
    """OpenAI's ``tool_choice`` (``"auto"``, ``{"type": "function", "function": {"name": ...}}``) as the kernel's."""
    if isinstance(choice, dict):
        return str(choice.get("function", {}).get("name") or "auto")
    return str(choice or "auto")


def openai_finish(reason: str) -> str:
    """The kernel's finish reason as OpenAI's ``finish_reason``."""
    return _FINISH.get(reason, "stop")
