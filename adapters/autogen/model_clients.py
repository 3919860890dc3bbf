"""Every AutoGen ChatCompletionClient's ``create`` / ``create_stream``, answered by the kernel.

The replacements are installed on each class of the ``ChatCompletionClient``
tree that implements the methods (OpenAI, Azure OpenAI, replay, Ollama, a
user's own client...), and on classes defined later. The client's own create
arguments (temperature, max_tokens, seed, stop) carry over; its model name is
kept in ``LLMRequest.extra["framework_model"]`` while the kernel serves the
call with its default model (or ``aios.patch(..., model=...)``, which must be
a model the kernel serves). Token usage is added to the client's own counters,
so ``client.total_usage()`` stays right. The OpenAI and Azure clients are
constructed without credentials while patched (:mod:`.credentials`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from aios.adapters.autogen import credentials
from aios.adapters.autogen.messages import (
    generation_fields,
    to_create_result,
    to_messages,
    to_response_format,
    to_tool_choice,
    to_tool_specs,
)
from aios.adapters.shared.class_tree import ClassTreePatch
from aios.adapters.shared.names import InstanceNames
from aios.adapters.shared.route import Route
from aios.adapters.shared.served_models import require_served
from autogen_core.models import ChatCompletionClient, CreateResult, RequestUsage

from aios_core.errors import CoreError
from aios_core.patching import Patcher
from aios_core.syscalls import LLMRequest, LLMResponse, ResponseFormat

#: clients that only wrap another client (which is itself patched): routing them would bypass their logic
DELEGATING_CLIENTS = frozenset({"autogen_ext.models.cache._chat_completion_cache.ChatCompletionCache"})

_names = InstanceNames("autogen")
T = TypeVar("T")


def _create_args(client: Any, extra_create_args: Mapping[str, Any]) -> dict[str, Any]:
    own = getattr(client, "_create_args", None)
    args = dict(own) if isinstance(own, Mapping) else {}
    args.update(extra_create_args or {})
    return args


def build_request(
    route: Route,
    client: Any,
    messages: Sequence[Any],
    tools: Sequence[Any],
    tool_choice: Any,
    json_output: Any,
    extra_create_args: Mapping[str, Any],
) -> LLMRequest:
    args = _create_args(client, extra_create_args)
    response_format = to_response_format(json_output)
    requested = args.get("response_format")
    if response_format is None and isinstance(requested, Mapping) and requested.get("type") in ("json_object", "json_schema"):
        response_format = ResponseFormat(type=requested["type"], json_schema=requested.get("json_schema"))
    return route.request(
        messages=to_messages(messages),
        tools=to_tool_specs(tools),
        tool_choice=to_tool_choice(tool_choice) if tools else "auto",
        response_format=response_format,
        extra={"framework": "autogen", "framework_model": str(args.get("model") or type(client).__name__)},
        **generation_fields(args),
    )


def record_usage(client: Any, usage: RequestUsage) -> None:
    """Keep the client's own usage counters (``total_usage()``, ``actual_usage()``) as the framework expects."""
    for attr in ("_total_usage", "_actual_usage"):
        current = getattr(client, attr, None)
        if isinstance(current, RequestUsage):
            setattr(client, attr, RequestUsage(current.prompt_tokens + usage.prompt_tokens, current.completion_tokens + usage.completion_tokens))
    if isinstance(getattr(client, "_cur_usage", None), RequestUsage):
        client._cur_usage = usage


class _CreateCall:
    """One ``create`` / ``create_stream`` call: AutoGen's create arguments read once, as the kernel request and its agent.

    The arguments are those of ``ChatCompletionClient.create`` (keyword-only
    after ``messages``); ones the kernel has no use for are accepted and ignored.
    """

    def __init__(
        self,
        route: Route,
        client: ChatCompletionClient,
        messages: Sequence[Any],
        *,
        tools: Sequence[Any] = (),
        tool_choice: Any = "auto",
        json_output: Any = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: Any = None,
        **_options: Any,
    ) -> None:
        self.client = client
        self.request = build_request(route, client, messages, tools, tool_choice, json_output, extra_create_args)
        self.identity = route.identity(_names.name_of(client))
        self._cancellation_token = cancellation_token

    def linked(self, step: Awaitable[T]) -> asyncio.Future[T]:
        """``step`` as a future the caller's cancellation token cancels."""
        future = asyncio.ensure_future(step)
        if self._cancellation_token is not None:
            self._cancellation_token.link_future(future)
        return future

    def result(self, response: LLMResponse) -> CreateResult:
        """The kernel's answer as AutoGen's CreateResult, its usage added to the client's counters."""
        result = to_create_result(response)
        record_usage(self.client, result.usage)
        return result


def make_create(route: Route) -> Any:
    async def create(self: ChatCompletionClient, messages: Sequence[Any], **options: Any) -> CreateResult:
        """AIOS: a kernel LLM syscall of the agent in scope (see adapters.autogen)."""
        call = _CreateCall(route, self, messages, **options)
        return call.result(await call.linked(route.acomplete(call.identity, call.request)))

    create.__aios_adapter__ = "autogen"  # type: ignore[attr-defined]
    return create


def make_create_stream(route: Route) -> Any:
    async def create_stream(self: ChatCompletionClient, messages: Sequence[Any], **options: Any) -> AsyncGenerator[str | CreateResult, None]:
        """AIOS: a streamed kernel LLM syscall: text deltas, then the CreateResult."""
        call = _CreateCall(route, self, messages, **options)
        pieces = route.astream(call.identity, call.request)
        response = None
        try:
            while True:
                try:
                    piece = await call.linked(pieces.__anext__())
                except StopAsyncIteration:
                    break
                if piece.response is not None:
                    response = piece.response
                    break
                if piece.delta:
                    yield piece.delta
        finally:
            await pieces.aclose()
        if response is None:
            raise CoreError("the kernel's stream ended without a final response")
        yield call.result(response)

    create_stream.__aios_adapter__ = "autogen"  # type: ignore[attr-defined]
    return create_stream


def install(patcher: Patcher, route: Route) -> None:
    require_served(route.kernel, route.options.model, route.framework)
    credentials.install(patcher)
    replacements = {"create": make_create(route), "create_stream": make_create_stream(route)}

    def patch_class(cls: type) -> None:
        if f"{cls.__module__}.{cls.__qualname__}" in DELEGATING_CLIENTS:
            return
        for name, replacement in replacements.items():
            original = cls.__dict__.get(name)
            if original is None or getattr(original, "__isabstractmethod__", False):
                continue
            patcher.replace(cls, name, replacement)

    ClassTreePatch(patcher, ChatCompletionClient, patch_class).apply()
