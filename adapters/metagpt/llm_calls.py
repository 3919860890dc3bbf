"""MetaGPT's LLM methods, answered by the kernel instead of a provider's HTTP client.

MetaGPT talks to models through ``BaseLLM`` subclasses, one per provider, and
each provider implements the same abstract methods (``acompletion``,
``_achat_completion``, ``_achat_completion_stream``; OpenAI also
``acompletion_text`` and ``aask_code``). Whatever the provider, under AIOS the
answer comes from the kernel, so every one of them gets the same
replacements, built here. They keep MetaGPT's contracts:

- ``acompletion_text`` returns the text; with ``stream=True`` the deltas go to
  MetaGPT's ``log_llm_stream`` as they arrive (what MetaGPT prints while a
  model streams), through ``kernel.astream``;
- ``acompletion`` / ``_achat_completion`` return an OpenAI ``ChatCompletion``
  (the "standard OpenAI completion interface" ``BaseLLM`` documents), and the
  providers' ``get_choice_text`` / ``get_choice_function_arguments`` accept it;
- ``aask_code`` offers MetaGPT's ``execute`` function (or the caller's
  ``tools``) and returns the arguments of the call, as ``OpenAILLM`` does;
- token usage is added to the LLM's cost manager as after any call.

Everything is async and awaits ``kernel.acall`` / ``kernel.astream``: no
blocking call runs on MetaGPT's event loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aios.adapters.shared.openai_format import content_text, openai_finish
from aios.adapters.shared.openai_format import to_tool_choice as to_tool_choice  # re-exported: llm_patch imports it from here
from aios.adapters.shared.openai_format import to_tool_specs as to_tool_specs  # re-exported: llm_patch imports it from here

from aios_core.identity import AgentIdentity
from aios_core.syscalls import LLMRequest, LLMResponse, Message

if TYPE_CHECKING:
    from aios.adapters.shared.route import Route

#: the agent name of calls made outside any Role or Action (``await LLM().aask("...")``)
FALLBACK_AGENT = "metagpt"
#: upper bound on a call's max_tokens unless ``aios.patch("metagpt", max_tokens=...)`` says otherwise:
#: MetaGPT asks for ``llm.max_token`` (4096) on every call, which on a local core reserves that much
#: KV cache per call and leaves little room for batching other agents
DEFAULT_MAX_TOKENS = 1024
_ROLES = {"system", "user", "assistant", "tool"}


# --------------------------------------------------------------------------- MetaGPT -> kernel


def to_messages(messages: list[dict[str, Any]]) -> list[Message]:
    """MetaGPT's message dicts as kernel messages.

    MetaGPT's own ``Message.to_dict`` can carry any role name (``"Human"``,
    ``"Alice(Engineer)"``); a model only knows system/user/assistant, so other
    roles are sent as user turns.
    """
    out = []
    for m in messages:
        role = m.get("role", "user")
        out.append(Message(role=role if role in _ROLES - {"tool"} else "user", content=content_text(m.get("content"), "metagpt")))
    return out


class Calls:
    """Builds and sends the syscalls of one patched MetaGPT: what every replacement method uses."""

    def __init__(self, route: Route, *, kernel_model: Callable[[str | None], str | None]) -> None:
        self.route = route
        self.kernel_model = kernel_model

    def identity(self) -> AgentIdentity:
        """The Role or Action in scope (set by the adapter around their runs), else the fallback agent."""
        return self.route.identity(FALLBACK_AGENT)

    def request(self, llm: Any, messages: list[dict[str, Any]], **fields: Any) -> LLMRequest:
        config = llm.config
        cap = self.route.options.max_tokens or DEFAULT_MAX_TOKENS
        wanted = getattr(config, "max_token", None)
        stop = getattr(config, "stop", None)
        top_p = getattr(config, "top_p", 1.0)
        request: dict[str, Any] = {
            "messages": to_messages(messages),
            "max_tokens": min(int(wanted), cap) if wanted else cap,
            "temperature": min(max(float(getattr(config, "temperature", 0.0) or 0.0), 0.0), 2.0),
            "top_p": top_p if isinstance(top_p, (int, float)) and 0 < top_p <= 1 else 1.0,
            "stop": [stop] if isinstance(stop, str) and stop else list(stop or []),
            **fields,
        }
        if self.route.options.model is None:
            request["model"] = self.kernel_model(getattr(llm, "model", None) or getattr(config, "model", None))
        return self.route.request(**request)

    async def complete(self, llm: Any, messages: list[dict[str, Any]], **fields: Any) -> LLMResponse:
        response: LLMResponse = await self.route.acomplete(self.identity(), self.request(llm, messages, **fields))
        self.account(llm, response)
        return response

    async def stream_text(self, llm: Any, messages: list[dict[str, Any]]) -> str:
        """Stream the answer into MetaGPT's stream log (as a provider does) and return the whole text."""
        from metagpt.logs import log_llm_stream

        response: LLMResponse | None = None
        parts: list[str] = []
        async for piece in self.route.astream(self.identity(), self.request(llm, messages)):
            if piece.delta:
                parts.append(piece.delta)
                log_llm_stream(piece.delta)
            if piece.response is not None:
                response = piece.response
        log_llm_stream("\n")
        if response is None:  # the kernel always ends a stream with the full response; be safe anyway
            return "".join(parts)
        self.account(llm, response)
        return response.content if response.content is not None else "".join(parts)

    @staticmethod
    def account(llm: Any, response: LLMResponse) -> None:
        """Add the call's tokens to the LLM's cost manager, as MetaGPT does after a provider's answer."""
        from metagpt.provider.base_llm import BaseLLM

        usage = {"prompt_tokens": response.usage.prompt_tokens, "completion_tokens": response.usage.completion_tokens}
        # BaseLLM's own implementation: some providers override _update_costs for their SDK's usage type
        BaseLLM._update_costs(llm, usage)


# --------------------------------------------------------------------------- kernel -> MetaGPT


def to_chat_completion(response: LLMResponse) -> Any:
    """The kernel's answer as the OpenAI ``ChatCompletion`` MetaGPT's callers expect from ``acompletion``."""
    from openai.types.chat import ChatCompletion

    tool_calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}} for c in response.tool_calls
    ]
    return ChatCompletion.model_validate(
        {
            "id": f"aios-{response.syscall_id or 'call'}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": response.core or "aios",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": openai_finish(response.finish_reason),
                    "message": {"role": "assistant", "content": response.content, "tool_calls": tool_calls or None},
                }
            ],
            "usage": {
                "prompt_tokens": response.usage.prompt_tokens,
                "completion_tokens": response.usage.completion_tokens,
                "total_tokens": response.usage.total_tokens,
            },
        }
    )


def is_chat_completion(value: Any) -> bool:
    from openai.types.chat import ChatCompletion

    return isinstance(value, ChatCompletion)


def code_arguments(response: LLMResponse) -> dict[str, Any]:
    """What ``aask_code`` returns: the first call's arguments, else the answer as code or markdown (OpenAILLM's rule)."""
    if response.tool_calls:
        return dict(response.tool_calls[0].arguments)
    content = response.content or ""
    fence = "```"
    if content.startswith(fence) and content.endswith(fence):
        from metagpt.utils.common import CodeParser

        return {"language": "python", "code": CodeParser.parse_code(None, content)}
    return {"language": "markdown", "code": content}
