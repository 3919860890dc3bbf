"""Every LangChain chat model's innermost calls, answered by the kernel.

``_generate`` / ``_agenerate`` / ``_stream`` / ``_astream`` are what
``invoke``, ``ainvoke``, ``batch``, ``stream``, ``astream`` and LangGraph end
up calling after LangChain has done its own work (callbacks, cache, rate
limiter, tracing). The four replacements are installed on every class of the
``BaseChatModel`` tree that implements any of them (ChatOpenAI, the fake
models, a user's own model, and classes defined later), so that every
model streams token by token from the kernel. Models that do not implement
``bind_tools`` get a generic one (OpenAI-format tools), so ``bind_tools`` and
``with_structured_output`` work on any model; tool calls come back as
``AIMessage.tool_calls``.

Generation settings carry over (call kwargs first, then the model's own
``temperature``, ``max_tokens``, ``top_p``, ``seed``, ``stop``); the model's
name is kept in ``LLMRequest.extra["framework_model"]`` while the kernel serves
the call with its default model (or ``aios.patch(..., model=...)``, which must
be a model the kernel serves). langchain-openai's models are constructed
without credentials while patched (:mod:`.credentials`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from aios.adapters.langchain import call_owners, credentials
from aios.adapters.langchain.calls import identity_for
from aios.adapters.langchain.messages import (
    delta_chunk,
    final_chunk,
    parse_target,
    to_chat_result,
    to_messages,
    to_response_format,
    to_tool_choice,
    to_tool_specs,
)
from aios.adapters.shared.class_tree import ClassTreePatch
from aios.adapters.shared.route import Route
from aios.adapters.shared.served_models import require_served
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from aios_core.errors import CoreError
from aios_core.patching import Patcher
from aios_core.syscalls import LLMRequest, LLMResponse

GENERATION_METHODS = ("_generate", "_agenerate", "_stream", "_astream")
#: model attributes that hold the output limit, by provider
_MAX_TOKENS_ATTRS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict")


def model_name(model: Any) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def _setting(model: Any, kwargs: dict[str, Any], *names: str) -> Any:
    for name in names:
        if kwargs.get(name) is not None:
            return kwargs[name]
    for name in names:
        value = getattr(model, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return None


def build_request(route: Route, model: Any, messages: Sequence[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> LLMRequest:
    tools = to_tool_specs(kwargs.get("tools") or [])
    fields: dict[str, Any] = {
        "messages": to_messages(messages),
        "tools": tools,
        "tool_choice": to_tool_choice(kwargs.get("tool_choice")) if tools else "auto",
        "response_format": to_response_format(kwargs.get("response_format")),
        "max_tokens": _setting(model, kwargs, *_MAX_TOKENS_ATTRS),
        "extra": {"framework": "langchain", "framework_model": model_name(model)},
    }
    for name in ("temperature", "top_p", "seed"):
        value = _setting(model, kwargs, name)
        if value is not None:
            fields[name] = value
    model_stop = getattr(model, "stop", None)
    stop = stop or kwargs.get("stop") or (model_stop if isinstance(model_stop, (list, str)) else None)
    if stop:
        fields["stop"] = stop
    return route.request(**fields)


def make_generate(route: Route) -> Any:
    def _generate(self: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        """AIOS: a kernel LLM syscall (see adapters.langchain)."""
        request = build_request(route, self, messages, stop, kwargs)
        identity = identity_for(route, self)
        response = route.complete(identity, request)
        call_owners.remember(response.tool_calls, identity)
        return to_chat_result(response, model_name(self), parse_target(kwargs.get("response_format")))

    return _mark(_generate)


def make_agenerate(route: Route) -> Any:
    async def _agenerate(
        self: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        """AIOS: a kernel LLM syscall (see adapters.langchain)."""
        request = build_request(route, self, messages, stop, kwargs)
        identity = identity_for(route, self)
        response = await route.acomplete(identity, request)
        call_owners.remember(response.tool_calls, identity)
        return to_chat_result(response, model_name(self), parse_target(kwargs.get("response_format")))

    return _mark(_agenerate)


def make_stream(route: Route) -> Any:
    def _stream(
        self: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        """AIOS: a streamed kernel LLM syscall: text chunks, then tool calls, usage and finish reason."""
        request = build_request(route, self, messages, stop, kwargs)
        identity = identity_for(route, self)
        pieces = route.stream(identity, request)
        response: LLMResponse | None = None
        try:
            for piece in pieces:
                if piece.response is not None:
                    response = piece.response
                    break
                if piece.delta:
                    chunk = delta_chunk(piece.delta)
                    if run_manager is not None:
                        run_manager.on_llm_new_token(piece.delta, chunk=chunk)
                    yield chunk
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        if response is None:
            raise CoreError("the kernel's stream ended without a final response")
        call_owners.remember(response.tool_calls, identity)
        last = final_chunk(response, model_name(self), parse_target(kwargs.get("response_format")))
        if run_manager is not None:
            run_manager.on_llm_new_token("", chunk=last)
        yield last

    return _mark(_stream)


def make_astream(route: Route) -> Any:
    async def _astream(
        self: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        """AIOS: a streamed kernel LLM syscall: text chunks, then tool calls, usage and finish reason."""
        request = build_request(route, self, messages, stop, kwargs)
        identity = identity_for(route, self)
        pieces = route.astream(identity, request)
        response: LLMResponse | None = None
        try:
            async for piece in pieces:
                if piece.response is not None:
                    response = piece.response
                    break
                if piece.delta:
                    chunk = delta_chunk(piece.delta)
                    if run_manager is not None:
                        await run_manager.on_llm_new_token(piece.delta, chunk=chunk)
                    yield chunk
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]
        if response is None:
            raise CoreError("the kernel's stream ended without a final response")
        call_owners.remember(response.tool_calls, identity)
        last = final_chunk(response, model_name(self), parse_target(kwargs.get("response_format")))
        if run_manager is not None:
            await run_manager.on_llm_new_token("", chunk=last)
        yield last

    return _mark(_astream)


def bind_tools(self: BaseChatModel, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
    """AIOS: tools in OpenAI format for models without their own ``bind_tools`` (the kernel serves the call)."""
    strict = kwargs.pop("strict", None)
    formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
    if tool_choice is not None:
        kwargs["tool_choice"] = tool_choice
    return self.bind(tools=formatted, **kwargs)


bind_tools.__aios_adapter__ = "langchain"  # type: ignore[attr-defined]


def _mark(fn: Any) -> Any:
    fn.__aios_adapter__ = "langchain"
    return fn


def install(patcher: Patcher, route: Route) -> None:
    replacements = {
        "_generate": make_generate(route),
        "_agenerate": make_agenerate(route),
        "_stream": make_stream(route),
        "_astream": make_astream(route),
    }
    base_bind_tools = BaseChatModel.__dict__["bind_tools"]

    require_served(route.kernel, route.options.model, route.framework)

    def patch_class(cls: type) -> None:
        if credentials.is_openai_base(cls):
            credentials.install_on(patcher, cls)
        if not any(name in cls.__dict__ for name in GENERATION_METHODS):
            return
        for name, replacement in replacements.items():
            patcher.replace(cls, name, replacement)
        if getattr(cls, "bind_tools", None) is base_bind_tools:
            patcher.replace(cls, "bind_tools", bind_tools)

    ClassTreePatch(patcher, BaseChatModel, patch_class, hook="__pydantic_init_subclass__").apply()
