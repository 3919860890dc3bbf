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
from aios_core.syscalls import LLMRequest, LLMResponse, StreamPiece

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


class _ModelCall:
    """One call of a patched chat model: its kernel request, the agent it runs as, and how the answer is shaped.

    The four replacements below differ only in sync/async and whole/streamed;
    what they build and what they make of the kernel's answer is here, once.
    """

    def __init__(self, route: Route, model: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> None:
        self.request = build_request(route, model, messages, stop, kwargs)
        self.identity = identity_for(route, model)
        self.response: LLMResponse | None = None  # a stream's final response, once it arrived
        self._model_name = model_name(model)
        self._parse_as = parse_target(kwargs.get("response_format"))

    def result(self, response: LLMResponse) -> ChatResult:
        """The whole answer; the agent of its tool calls is remembered for when the tools run."""
        call_owners.remember(response.tool_calls, self.identity)
        return to_chat_result(response, self._model_name, self._parse_as)

    def chunk_of(self, piece: StreamPiece) -> ChatGenerationChunk | None:
        """A streamed piece's text chunk; the final response is kept (its text already came in the deltas)."""
        if piece.response is not None:
            self.response = piece.response
            return None
        return delta_chunk(piece.delta) if piece.delta else None

    def last_chunk(self) -> ChatGenerationChunk:
        """The stream's last chunk: tool calls, usage and finish reason."""
        if self.response is None:
            raise CoreError("the kernel's stream ended without a final response")
        call_owners.remember(self.response.tool_calls, self.identity)
        return final_chunk(self.response, self._model_name, self._parse_as)


def make_generate(route: Route) -> Any:
    def _generate(self: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        """AIOS: a kernel LLM syscall (see adapters.langchain)."""
        call = _ModelCall(route, self, messages, stop, kwargs)
        return call.result(route.complete(call.identity, call.request))

    return _mark(_generate)


def make_agenerate(route: Route) -> Any:
    async def _agenerate(
        self: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        """AIOS: a kernel LLM syscall (see adapters.langchain)."""
        call = _ModelCall(route, self, messages, stop, kwargs)
        return call.result(await route.acomplete(call.identity, call.request))

    return _mark(_agenerate)


def make_stream(route: Route) -> Any:
    def _stream(
        self: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        """AIOS: a streamed kernel LLM syscall: text chunks, then tool calls, usage and finish reason."""
        call = _ModelCall(route, self, messages, stop, kwargs)
        pieces = route.stream(call.identity, call.request)
        try:
            for piece in pieces:
                chunk = call.chunk_of(piece)
                if call.response is not None:
                    break
                if chunk is not None:
                    if run_manager is not None:
                        run_manager.on_llm_new_token(piece.delta, chunk=chunk)
                    yield chunk
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        last = call.last_chunk()
        if run_manager is not None:
            run_manager.on_llm_new_token("", chunk=last)
        yield last

    return _mark(_stream)


def make_astream(route: Route) -> Any:
    async def _astream(
        self: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        """AIOS: a streamed kernel LLM syscall: text chunks, then tool calls, usage and finish reason."""
        call = _ModelCall(route, self, messages, stop, kwargs)
        pieces = route.astream(call.identity, call.request)
        try:
            async for piece in pieces:
                chunk = call.chunk_of(piece)
                if call.response is not None:
                    break
                if chunk is not None:
                    if run_manager is not None:
                        await run_manager.on_llm_new_token(piece.delta, chunk=chunk)
                    yield chunk
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]
        last = call.last_chunk()
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
