"""Open-Interpreter's model endpoint (``interpreter.llm.completions``), answered by the kernel.

``Llm.run`` prepares OpenAI-style parameters (messages, the ``execute`` tool
when the model calls functions, max_tokens, temperature) and iterates
``llm.completions(**params)``, which normally streams litellm chunks from a
hosted API. The replacement takes the same parameters, sends one LLM syscall
per call through ``kernel.stream`` and yields litellm's own chunk types
(``ModelResponseStream``), so OI's parsers (``run_tool_calling_llm`` with its
``execute`` function, ``run_text_llm`` with markdown code blocks) read them as
they read a provider's stream: text deltas as they are generated, then the
tool call in one piece, then the finish reason.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aios.adapters.shared.openai_format import content_text, openai_finish, to_tool_choice, to_tool_specs
from aios.adapters.shared.served_models import require_served

from aios_core.identity import AgentIdentity
from aios_core.syscalls import LLMRequest, LLMResponse, Message, ToolCall

if TYPE_CHECKING:
    from aios.adapters.shared.route import Route

#: upper bound on a call's max_tokens unless ``aios.patch("open-interpreter", max_tokens=...)`` says otherwise:
#: OI sizes max_tokens from the hosted model's card (16384 for gpt-4o), which a local core cannot reserve
DEFAULT_MAX_TOKENS = 1024


# --------------------------------------------------------------------------- OI parameters -> kernel request


def _arguments(raw: Any) -> dict[str, Any]:
    """A past call's arguments; OI writes a plain comment as arguments when it fabricates a call for orphan output."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except json.JSONDecodeError:
        return {"arguments": raw}
    return value if isinstance(value, dict) else {"arguments": value}


def to_messages(messages: list[dict[str, Any]]) -> list[Message]:
    """OI's OpenAI-format messages (after its own ``process_messages``) as kernel messages."""
    out: list[Message] = []
    for m in messages:
        role = m.get("role", "user")
        content = content_text(m.get("content"), "open-interpreter")
        if role in ("tool", "function"):
            out.append(Message(role="tool", content=content, tool_call_id=m.get("tool_call_id") or "call", name=m.get("name")))
            continue
        if role == "assistant":
            calls = []
            for tc in m.get("tool_calls") or []:
                fn = tc.get("function") or {}
                fields = {"id": tc["id"]} if tc.get("id") else {}
                calls.append(ToolCall(name=fn.get("name") or "execute", arguments=_arguments(fn.get("arguments")), **fields))
            if m.get("function_call"):
                fn = m["function_call"]
                calls.append(ToolCall(name=fn.get("name") or "execute", arguments=_arguments(fn.get("arguments"))))
            out.append(Message(role="assistant", content=content if content or not calls else None, tool_calls=calls or None))
            continue
        out.append(Message(role=role if role == "system" else "user", content=content))
    return out


class Completions:
    """The kernel-routed ``completions`` of one patch (its route, options and model lookup)."""

    def __init__(self, route: Route, identity: Callable[[Any], AgentIdentity], kernel_model: Callable[[str | None], str | None]) -> None:
        require_served(route.kernel, route.options.model, route.framework)  # at patch time, not at the first chat
        self.route = route
        self.identity = identity
        self.kernel_model = kernel_model

    def request(self, params: dict[str, Any]) -> LLMRequest:
        cap = self.route.options.max_tokens or DEFAULT_MAX_TOKENS
        wanted = params.get("max_tokens")
        fields: dict[str, Any] = {
            "messages": to_messages(params["messages"]),
            "max_tokens": min(int(wanted), cap) if wanted else cap,
            "temperature": min(max(float(params.get("temperature") or 0.0), 0.0), 2.0),
            "stop": params.get("stop") or [],
        }
        if params.get("tools"):
            fields["tools"] = to_tool_specs(params["tools"])
            if params.get("tool_choice") is not None:
                fields["tool_choice"] = to_tool_choice(params["tool_choice"])
        if self.route.options.model is None:
            fields["model"] = self.kernel_model(params.get("model"))
        return self.route.request(**fields)

    def __call__(self, llm: Any, **params: Any) -> Iterator[Any]:
        """``llm.completions(**params)``: a generator of litellm stream chunks, like the original."""
        identity = self.identity(llm.interpreter)
        request = self.request(params)
        chunk_id = f"aios-{uuid.uuid4().hex[:16]}"
        model = params.get("model") or "aios"
        for piece in self.route.stream(identity, request):
            if piece.delta:
                yield _chunk(chunk_id, model, content=piece.delta)
            if piece.response is not None:
                yield from _final_chunks(chunk_id, model, piece.response)


# --------------------------------------------------------------------------- kernel response -> litellm chunks


def _chunk(chunk_id: str, model: str, *, content: str | None = None, tool_calls: list[Any] | None = None, finish: str | None = None) -> Any:
    from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices

    delta = Delta(content=content, role="assistant", tool_calls=tool_calls)
    return ModelResponseStream(id=chunk_id, model=model, choices=[StreamingChoices(index=0, delta=delta, finish_reason=finish)])


def _final_chunks(chunk_id: str, model: str, response: LLMResponse) -> Iterator[Any]:
    from litellm.types.utils import ChatCompletionDeltaToolCall, Function

    if response.tool_calls:
        calls = [
            ChatCompletionDeltaToolCall(
                id=c.id, type="function", index=i, function=Function(name=c.name, arguments=json.dumps(c.arguments))
            )
            for i, c in enumerate(response.tool_calls)
        ]
        yield _chunk(chunk_id, model, tool_calls=calls)
    yield _chunk(chunk_id, model, finish=openai_finish(response.finish_reason))
